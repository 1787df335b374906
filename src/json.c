/* crm.core's answer decoding: the text goes to lua-cjson (the decoder crm.json configured), and
 * the decoded value is walked once in C. lua-cjson 2.1.0 makes the same empty table of [] and
 * {}, so crm_json_scan (src/wire.c) decides first how the text is rewritten for the walk to
 * find every array again; see wire.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "jsonplan.h"
#include "wire.h"

/* Registry keys: addresses of these statics. */
static char key_decode, key_array_mt;

void crm_push_array_mt(lua_State *L)
{
    lua_pushlightuserdata(L, &key_array_mt);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

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

/* ---- following a plan (src/jsonplan.c): the tables to mark and the members to drop, found
 * by key and index; every step is checked against the decoded value ---- */

typedef struct {
    const crm_plan *p;
    const char *s;
    int mt;          /* stack index of array_mt */
    int strip;       /* drop null members */
    const void **seen; /* every container table met, to find one met twice (duplicate keys) */
    size_t nseen;
} follow_t;

/* Pushes the key (objects; nil for arrays) and the value event e stands for, in the table at
 * index parent. */
static void push_member(lua_State *L, follow_t *f, const crm_plan_event *e, int parent)
{
    if (e->in_object) {
        lua_pushlstring(L, f->s + e->key_off, e->key_len);
        lua_pushvalue(L, -1);
        lua_rawget(L, parent);
    } else {
        lua_pushnil(L);
        lua_rawgeti(L, parent, (int)e->index);
    }
}

/* Whether the table at index t is what container event e says, and marks it. */
static int check_container(lua_State *L, follow_t *f, const crm_plan_event *e, int t)
{
    if (lua_type(L, t) != LUA_TTABLE)
        return 0;
    lua_rawgeti(L, t, 1);
    int first = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (e->kind == CRM_PLAN_OBJECT) {
        if (first)
            return 0;
    } else {
        if (e->count > 0 && !first)
            return 0;
        if (e->count == 0) {
            lua_pushnil(L);
            if (lua_next(L, t)) {
                lua_pop(L, 2);
                return 0;
            }
        }
        lua_pushvalue(L, f->mt);
        lua_setmetatable(L, t);
    }
    f->seen[f->nseen++] = lua_topointer(L, t);
    return 1;
}

/* Follows events [from, to) under the table at index parent. 0: the plan does not fit. */
static int follow(lua_State *L, follow_t *f, int parent, size_t from, size_t to, int depth)
{
    if (depth > 1000 || !lua_checkstack(L, 6))
        return 0;
    for (size_t j = from; j < to;) {
        const crm_plan_event *e = &f->p->ev[j];
        if (e->end <= j || e->end > to)
            return 0;
        push_member(L, f, e, parent);
        int child = lua_gettop(L);
        if (e->kind == CRM_PLAN_NULL) {
            if (f->strip && lua_type(L, child) == LUA_TLIGHTUSERDATA && lua_touserdata(L, child) == NULL) {
                lua_pushvalue(L, child - 1);
                lua_pushnil(L);
                lua_rawset(L, parent);
            }
        } else if (!check_container(L, f, e, child) || !follow(L, f, child, j + 1, e->end, depth + 1)) {
            lua_pop(L, 2);
            return 0;
        }
        lua_pop(L, 2);
        j = e->end;
    }
    return 1;
}

static int ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(const void *const *)a, y = (uintptr_t)*(const void *const *)b;
    return x < y ? -1 : x > y;
}

/* The plan applied to the decoded value at index v. 1 done; 0 the plan does not fit (a key
 * given twice, say): the caller decodes the other way. */
static int follow_plan(lua_State *L, const crm_plan *p, const char *s, int v, int mt, int strip)
{
    if (p->n == 0)
        return lua_type(L, v) != LUA_TTABLE;
    const crm_plan_event *root = &p->ev[0];
    if (root->kind == CRM_PLAN_NULL || root->end != p->n)
        return 0;
    const void *small[64];
    follow_t f = {p, s, mt, strip, small, 0};
    if (p->n > sizeof small / sizeof small[0]) {
        f.seen = malloc(p->n * sizeof *f.seen);
        if (f.seen == NULL)
            return 0;
    }
    int ok = check_container(L, &f, root, v) && follow(L, &f, v, 1, p->n, 0);
    if (ok && f.nseen > 1) {
        qsort(f.seen, f.nseen, sizeof *f.seen, ptr_cmp);
        for (size_t i = 1; i < f.nseen && ok; i++)
            if (f.seen[i] == f.seen[i - 1])
                ok = 0;
    }
    if (f.seen != small)
        free(f.seen);
    return ok;
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

    /* A flat object (most single records): the text as it is, nothing to mark or drop. */
    if (crm_plan_flat(s, n)) {
        lua_pushvalue(L, base + 2);
        lua_pushlstring(L, s, n);
        if (lua_pcall(L, 1, 1, 0) != 0)
            return push_fail(L, base, CRM_NOT_JSON);
        int ok = lua_type(L, base + 3) == LUA_TTABLE;
        if (ok) {
            lua_rawgeti(L, base + 3, 1);
            ok = lua_isnil(L, -1);
            lua_pop(L, 1);
        }
        if (ok) {
            lua_replace(L, base + 1);
            lua_settop(L, base + 1);
            return 1;
        }
        lua_settop(L, base + 2);
    }

    /* The usual way: the text as it is, then the plan's steps. */
    crm_plan plan;
    if (crm_plan_scan(s, n, &plan) == 0 && plan.simple && !plan.long_num) {
        lua_pushvalue(L, base + 2);
        lua_pushlstring(L, s, n);
        if (lua_pcall(L, 1, 1, 0) != 0) {
            crm_plan_free(&plan);
            return push_fail(L, base, CRM_NOT_JSON);
        }
        int fits = follow_plan(L, &plan, s, base + 3, base + 1, !keep_nulls);
        crm_plan_free(&plan);
        if (fits) {
            lua_replace(L, base + 1);
            lua_settop(L, base + 1);
            return 1;
        }
        lua_settop(L, base + 2);
    } else {
        crm_plan_free(&plan);
    }

    /* The other way (escaped or repeated keys, numbers that may not fit a double): the text
     * rewritten so that the walk can tell every array (src/wire.c), and a walk of it all. */
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
