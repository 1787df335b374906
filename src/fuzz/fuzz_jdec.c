/* libFuzzer target for crm's JSON decoder (src/jdec.c), against an oracle that shares none of
 * its code: lua-cjson 2.1.0 (the decoder crm used before) for accept or reject and for the values,
 * and two independent marker walks for what cjson cannot tell:
 *   - the text rewritten (every array given a first element that says "array", every number
 *     turned into a string of its own digits) and decoded by cjson again: which tables are
 *     arrays, which numbers are integers under Lua 5.4;
 *   - the plan of src/fuzz/jsonplan.c (crm's old structure scan): how many arrays and objects.
 * The first input byte's low bit is keep_nulls; the rest is the text. Any difference in accept
 * or reject, value, array marks, null members or integer vs float aborts. Lua 5.4. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../jdec.h"
#include "jsonplan.h"

static void fail_at(int line)
{
    fprintf(stderr, "fuzz_jdec.c:%d: decoder and oracle differ\n", line);
    abort();
}
#define check(ok) ((ok) ? (void)0 : fail_at(__LINE__))

static lua_State *L;
static int decode_ref;

static void setup(void)
{
    L = luaL_newstate();
    check(L != NULL);
    luaL_openlibs(L);
    /* a fresh cjson codec, configured as crm.json configured its decoder */
    int rc = luaL_dostring(L, "local c = require('cjson').new(); c.decode_invalid_numbers(false);"
                              "return c.decode");
    if (rc != 0) {
        fprintf(stderr, "fuzz_jdec: %s\n", lua_tostring(L, -1));
        abort();
    }
    decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    check(crm_jdec_init());
}

/* The text with a tag as every array's first element and every number as a string
 * "\u0001<its text>"; only called on texts cjson accepts (so every number is one run of
 * [-+.0-9eE] and nothing else looks like one outside strings). */
static char *rewrite(const char *s, size_t n, size_t *out_len)
{
    char *o = malloc(n * 16 + 16);
    check(o != NULL);
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '"') {
            size_t k = i + 1;
            while (k < n && s[k] != '"')
                k += s[k] == '\\' ? 2 : 1;
            memcpy(o + j, s + i, k + 1 - i);
            j += k + 1 - i;
            i = k + 1;
        } else if (c == '[') {
            size_t k = i + 1;
            while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r'))
                k++;
            int empty = k < n && s[k] == ']';
            const char *tag = empty ? "[\"\\u0000E\"" : "[\"\\u0000A\",";
            memcpy(o + j, tag, strlen(tag));
            j += strlen(tag);
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            memcpy(o + j, "\"\\u0001", 7);
            j += 7;
            while (i < n && strchr("+-.0123456789eE", s[i]) && s[i])
                o[j++] = s[i++];
            o[j++] = '"';
        } else {
            o[j++] = c;
            i++;
        }
    }
    *out_len = j;
    return o;
}

/* 1 when the number's text makes a Lua integer (no fraction, no exponent, fits, not -0). */
static int integer_text(const char *t, size_t n, long long *v)
{
    if (memchr(t, '.', n) || memchr(t, 'e', n) || memchr(t, 'E', n))
        return 0;
    if (n == 2 && t[0] == '-' && t[1] == '0')
        return 0;
    char buf[512];
    if (n >= sizeof buf)
        return 0;
    memcpy(buf, t, n);
    buf[n] = '\0';
    errno = 0;
    *v = strtoll(buf, NULL, 10);
    return errno == 0;
}

typedef struct {
    int keep;
    size_t arrays, objects, members; /* met in crm's value (members: in the rewritten text's tables) */
} walk_t;

/* Compares crm's value (index m), cjson's (a) and the rewritten text's (t), all absolute. */
static void compare(walk_t *w, int m, int a, int t, int depth)
{
    check(depth <= CRM_JDEC_MAX_DEPTH + 1 && lua_checkstack(L, 8));
    int ta = lua_type(L, a);
    switch (ta) {
    case LUA_TNUMBER: {
        check(lua_type(L, m) == LUA_TNUMBER && lua_type(L, t) == LUA_TSTRING);
        size_t tl;
        const char *tok = lua_tolstring(L, t, &tl);
        check(tl >= 2 && tok[0] == '\1');
        long long iv;
        double av = lua_tonumber(L, a);
        if (integer_text(tok + 1, tl - 1, &iv)) {
            check(lua_isinteger(L, m) && lua_tointeger(L, m) == iv);
            check((double)iv == av);
        } else {
            check(!lua_isinteger(L, m));
            double mv = lua_tonumber(L, m);
            check(memcmp(&mv, &av, sizeof mv) == 0);
        }
        break;
    }
    case LUA_TSTRING: {
        size_t ml, al;
        check(lua_type(L, m) == LUA_TSTRING);
        const char *ms = lua_tolstring(L, m, &ml), *as = lua_tolstring(L, a, &al);
        check(ml == al && memcmp(ms, as, ml) == 0);
        break;
    }
    case LUA_TBOOLEAN:
        check(lua_type(L, m) == LUA_TBOOLEAN && lua_toboolean(L, m) == lua_toboolean(L, a));
        break;
    case LUA_TLIGHTUSERDATA:
        check(lua_type(L, m) == LUA_TLIGHTUSERDATA && lua_touserdata(L, m) == NULL);
        break;
    case LUA_TTABLE: {
        check(lua_type(L, m) == LUA_TTABLE && lua_type(L, t) == LUA_TTABLE);
        int is_array = lua_rawgeti(L, t, 1) == LUA_TSTRING;
        size_t tl = 0;
        const char *tag = is_array ? lua_tolstring(L, -1, &tl) : NULL;
        lua_pop(L, 1);
        int has_mt = lua_getmetatable(L, m);
        if (has_mt) {
            check(lua_rawequal(L, -1, 1)); /* array_mt, at index 1 */
            lua_pop(L, 1);
        }
        check(has_mt == is_array);
        size_t mcount = 0;
        lua_pushnil(L);
        while (lua_next(L, m)) {
            mcount++;
            lua_pop(L, 1);
        }
        if (is_array) {
            w->arrays++;
            check(tl == 2 && tag[0] == '\0' && (tag[1] == 'A' || tag[1] == 'E'));
            size_t len = tag[1] == 'E' ? 0 : lua_rawlen(L, t) - 1;
            check(lua_rawlen(L, m) == len && lua_rawlen(L, a) == len && mcount == len);
            for (size_t i = 1; i <= len; i++) {
                lua_rawgeti(L, m, (lua_Integer)i);
                lua_rawgeti(L, a, (lua_Integer)i);
                lua_rawgeti(L, t, (lua_Integer)i + 1);
                int top = lua_gettop(L);
                compare(w, top - 2, top - 1, top, depth + 1);
                lua_pop(L, 3);
            }
        } else {
            w->objects++;
            size_t kept = 0;
            lua_pushnil(L);
            while (lua_next(L, t)) {
                w->members++;
                int k = lua_gettop(L) - 1;
                lua_pushvalue(L, k);
                lua_rawget(L, m);
                lua_pushvalue(L, k);
                lua_rawget(L, a);
                int top = lua_gettop(L);
                if (lua_type(L, top) == LUA_TLIGHTUSERDATA) { /* a null member */
                    if (w->keep) {
                        check(lua_type(L, top - 1) == LUA_TLIGHTUSERDATA);
                        kept++;
                    } else {
                        check(lua_isnil(L, top - 1));
                    }
                } else {
                    compare(w, top - 1, top, k + 1, depth + 1);
                    kept++;
                }
                lua_pop(L, 3);
            }
            check(mcount == kept);
        }
        break;
    }
    default:
        check(0);
    }
}

/* 1 when a number of the text (one cjson accepted) is beyond a double: crm refuses it even where
 * a repeated key takes it out of cjson's value. */
static int text_has_inf(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                i += s[i] == '\\';
        } else if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
            size_t j = i;
            while (j < n && strchr("+-.0123456789eE", s[j]) && s[j])
                j++;
            char *t = malloc(j - i + 1);
            check(t != NULL);
            memcpy(t, s + i, j - i);
            t[j - i] = '\0';
            double v = strtod(t, NULL);
            free(t);
            if (v - v != 0)
                return 1;
            i = j - 1;
        }
    }
    return 0;
}

/* Object members in a text cjson accepted: its colons outside strings. */
static size_t count_members(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                i += s[i] == '\\';
        } else if (s[i] == ':') {
            c++;
        }
    }
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (L == NULL)
        setup();
    int keep = data[0] & 1;
    size_t n = size - 1;
    char *s = malloc(n + 1); /* the text and its NUL, exactly: ASan sees any read past them */
    check(s != NULL);
    memcpy(s, data + 1, n);
    s[n] = '\0';

    lua_settop(L, 0);
    lua_newtable(L); /* 1: array_mt */
    crm_jdec_err err = {NULL, 0};
    int ok = crm_jdec(L, s, n, keep, 1, &err);
    check(lua_gettop(L) == 1 + ok);
    if (!ok)
        check((strcmp(err.msg, CRM_JDEC_INVALID) == 0 || strcmp(err.msg, CRM_JDEC_RANGE) == 0) && err.pos >= 1 &&
              err.pos <= n + 1);

    lua_rawgeti(L, LUA_REGISTRYINDEX, decode_ref);
    lua_pushlstring(L, s, n);
    int cj = lua_pcall(L, 1, 1, 0) == 0; /* index 2 + ok: cjson's value or its message */
    int a = lua_gettop(L);
    if (memchr(s, '\0', n)) {
        check(!ok); /* cjson stops at a NUL; crm refuses any */
    } else if (!cj) {
        check(!ok);
    } else if (text_has_inf(s, n)) {
        check(!ok && strcmp(err.msg, CRM_JDEC_RANGE) == 0);
    } else {
        check(ok);
        size_t tn;
        char *t = rewrite(s, n, &tn);
        lua_rawgeti(L, LUA_REGISTRYINDEX, decode_ref);
        lua_pushlstring(L, t, tn);
        free(t);
        check(lua_pcall(L, 1, 1, 0) == 0);
        walk_t w = {keep, 0, 0, 0};
        compare(&w, 2, a, a + 1, 0);

        /* the old plan counts the same arrays and objects, unless a repeated key dropped some */
        crm_plan plan;
        if (crm_plan_scan(s, n, &plan) == 0 && plan.simple) {
            size_t pa = 0, po = 0;
            for (size_t i = 0; i < plan.n; i++) {
                pa += plan.ev[i].kind == CRM_PLAN_ARRAY;
                po += plan.ev[i].kind == CRM_PLAN_OBJECT;
            }
            check(w.arrays <= pa && w.objects <= po);
            if (count_members(s, n) == w.members)
                check(w.arrays == pa && w.objects == po);
        }
        crm_plan_free(&plan);
    }
    lua_settop(L, 0);
    free(s);
    return 0;
}
