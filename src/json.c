/* crm.core's answer decoding: the text goes to lua-cjson (the decoder crm.json configured), and
 * the decoded value is walked once in C. lua-cjson 2.1.0 makes the same empty table of [] and
 * {}, so crm_json_scan (src/wire.c) decides first how the text is rewritten for the walk to
 * find every array again; see wire.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "wire.h"

/* Registry keys: addresses of these statics. */
static char key_decode, key_array_mt;

int crm_l_json_setup(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushlightuserdata(L, &key_decode);
    lua_pushvalue(L, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &key_array_mt);
    lua_pushvalue(L, 2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

typedef struct {
    int mode;   /* CRM_JSON_* */
    int strip;  /* drop nulls in objects */
    int finite; /* check numbers: the text has a long exponent */
    int bad;    /* a number out of range was found */
    int mt;     /* stack index of array_mt */
} walk_t;

static int is_null(lua_State *L, int i)
{
    return lua_type(L, i) == LUA_TLIGHTUSERDATA && lua_touserdata(L, i) == NULL;
}

static int out_of_range(lua_State *L, int i)
{
    if (lua_type(L, i) != LUA_TNUMBER)
        return 0;
    lua_Number v = lua_tonumber(L, i);
    return isinf(v);
}

/* The value at stack index t (a table) and everything under it. Depth is bounded by cjson's
 * decode depth (1000), and the stack is checked at every level. */
static void walk(lua_State *L, int t, walk_t *w, int depth)
{
    if (depth > 1000 || !lua_checkstack(L, 6)) {
        w->bad = 1;
        return;
    }
    lua_rawgeti(L, t, 1);
    int is_array = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (is_array) {
        lua_pushvalue(L, w->mt);
        lua_setmetatable(L, t);
        size_t n = (size_t)crm_rawlen(L, t);
        if (w->mode == CRM_JSON_FILL && n == 1) {
            lua_rawgeti(L, t, 1);
            int placeholder = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
            lua_pop(L, 1);
            if (placeholder) {
                lua_pushnil(L);
                lua_rawseti(L, t, 1);
                return;
            }
        }
        int shift = w->mode == CRM_JSON_TAG;
        for (size_t i = 1 + (size_t)shift; i <= n; i++) {
            lua_rawgeti(L, t, (int)i);
            if (lua_type(L, -1) == LUA_TTABLE)
                walk(L, lua_gettop(L), w, depth + 1);
            else if (w->finite && out_of_range(L, -1))
                w->bad = 1;
            if (shift)
                lua_rawseti(L, t, (int)i - 1);
            else
                lua_pop(L, 1);
        }
        if (shift) {
            lua_pushnil(L);
            lua_rawseti(L, t, (int)n);
        }
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int vt = lua_type(L, -1);
        if (vt == LUA_TTABLE) {
            walk(L, lua_gettop(L), w, depth + 1);
        } else if (w->strip && vt == LUA_TLIGHTUSERDATA && is_null(L, -1)) {
            lua_pushvalue(L, -2);
            lua_pushnil(L);
            lua_rawset(L, t); /* clearing a visited field is allowed during lua_next */
        } else if (w->finite && out_of_range(L, -1)) {
            w->bad = 1;
        }
        lua_pop(L, 1);
    }
}

static int push_fail(lua_State *L, int base, const char *msg)
{
    lua_settop(L, base);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

int crm_decode_push(lua_State *L, const char *s, size_t n, int keep_nulls)
{
    int base = lua_gettop(L);
    if (!lua_checkstack(L, 8))
        return push_fail(L, base, CRM_NOT_JSON);
    lua_pushlightuserdata(L, &key_array_mt);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &key_decode);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_istable(L, base + 1) || !lua_isfunction(L, base + 2))
        return luaL_error(L, "crm.core: decode before crm.json set it up");

    crm_json_info info;
    crm_json_scan(s, n, &info);
    if (info.mode == CRM_JSON_PLAIN) {
        lua_pushlstring(L, s, n);
    } else {
        size_t cap = crm_json_rewrite_size(n, &info);
        char *out = malloc(cap);
        if (out == NULL)
            return push_fail(L, base, CRM_NOT_JSON);
        size_t len = crm_json_rewrite(s, n, &info, out);
        lua_pushlstring(L, out, len);
        free(out);
    }
    if (lua_pcall(L, 1, 1, 0) != 0)
        return push_fail(L, base, CRM_NOT_JSON);
    /* stack: base+1 array_mt, base+2 value */
    if (lua_type(L, base + 2) == LUA_TTABLE && (info.arrays || info.has_null || info.long_exp)) {
        walk_t w = {info.mode, !keep_nulls && info.has_null, info.long_exp, 0, base + 1};
        walk(L, base + 2, &w, 0);
        if (w.bad)
            return push_fail(L, base, CRM_OUT_OF_RANGE);
    } else if (info.long_exp && out_of_range(L, base + 2)) {
        return push_fail(L, base, CRM_OUT_OF_RANGE);
    }
    lua_remove(L, base + 1);
    return 1;
}

int crm_l_decode(lua_State *L)
{
    size_t n;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    int keep = lua_toboolean(L, 2);
    if (s == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, CRM_NOT_JSON);
        return 2;
    }
    lua_settop(L, 2);
    return crm_decode_push(L, s, n, keep);
}
