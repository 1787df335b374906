/* crm's JSON decoder (see jdec.h for the rules). One loop with an explicit stack of open
 * containers (lv[], their state: object or array, where their members wait on the Lua stack,
 * which keys were set). A container's members wait on the Lua stack until it closes and then go
 * into a table made at its size, so no table grows and rehashes member by member. Strings
 * without escapes are pushed straight from the text; others are decoded into a scratch buffer
 * first. */
#define _GNU_SOURCE /* strtod_l, newlocale: numbers are read in the C locale whatever the host set */
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jdec.h"

#if LUA_VERSION_NUM >= 503
#define JDEC_INTEGERS 1
#define jdec_newuserdata(L, n) lua_newuserdatauv((L), (n), 0)
#else
#define JDEC_INTEGERS 0
#define jdec_newuserdata(L, n) lua_newuserdata((L), (n))
#endif

typedef unsigned char uchar;

/* An open container. Its members wait on the Lua stack (key and value pairs, or elements) from
 * `start` on, and go into a table made for their count when it closes, so that tables are made
 * at their size instead of growing (and rehashing) one member at a time. A long container moves
 * them into its table every `cap` slots (the table then sits at `start`); deep in the text
 * `cap` is small, so that the stack stays bounded (LuaJIT lets a C function have 8000 slots). */
typedef struct {
    uint64_t keys; /* objects: one bit per key set (a hash), to know when a null may hide one */
    lua_Integer idx; /* arrays: elements already in the table */
    int start;     /* the stack slot of the first waiting member (or of the table) */
    int cap;       /* waiting slots that make a flush */
    int in_obj;
    int has_table; /* the table exists, at start */
} level;

typedef struct {
    lua_State *L;
    const uchar *s, *end;
    char *buf;   /* scratch: a decoded string with escapes, a long number */
    size_t cap;
    int buf_slot; /* stack slot that keeps a grown buffer (a userdata) alive */
    const uchar *range_at; /* the first number beyond a double */
    crm_jdec_err *err;
    char small[256];
} jdec;

static const uchar ws_tab[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};
/* Bytes a plain string run stops at: its end, an escape, the NUL after the text (or a NUL in it). */
static const uchar str_stop[256] = {['"'] = 1, ['\\'] = 1, [0] = 1};
/* A hex digit's value plus one (0: not a hex digit). */
static const uchar hex_val[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
    ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
    ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};
/* What a one-letter escape stands for (0: not an escape; 'u' is read apart). */
static const uchar esc_val[256] = {['"'] = '"', ['\\'] = '\\', ['/'] = '/', ['b'] = '\b',
                                   ['f'] = '\f', ['n'] = '\n', ['r'] = '\r', ['t'] = '\t'};

static inline const uchar *skip_ws(const uchar *p)
{
    while (ws_tab[*p])
        p++;
    return p;
}

static inline int is_digit(uchar c)
{
    return c >= '0' && c <= '9';
}

static int fail(jdec *d, const uchar *at, const char *msg)
{
    d->err->msg = msg;
    d->err->pos = (size_t)(at - d->s) + 1;
    return 0;
}

/* The scratch buffer holds at least need bytes, the first `keep` kept. */
static void reserve(jdec *d, size_t need, size_t keep)
{
    if (need <= d->cap)
        return;
    size_t cap = d->cap * 2 > need ? d->cap * 2 : need;
    char *b = jdec_newuserdata(d->L, cap);
    memcpy(b, d->buf, keep);
    lua_replace(d->L, d->buf_slot);
    d->buf = b;
    d->cap = cap;
}

static int hex4(const uchar *h)
{
    int v = 0;
    for (int i = 0; i < 4; i++) { /* stops at the first non-hex byte: never past the NUL */
        int x = hex_val[h[i]];
        if (x == 0)
            return -1;
        v = v << 4 | (x - 1);
    }
    return v;
}

/* One \u escape at q ('\\'), as lua-cjson reads it: a high surrogate must be followed by a low
 * one, a lone low one is refused. Writes the UTF-8 bytes at out; returns the bytes past the
 * escape (6 or 12), 0 when refused. */
static int unicode_escape(const uchar *q, char *out, int *len)
{
    int cp = hex4(q + 2), used = 6;
    if (cp < 0)
        return 0;
    if ((cp & 0xF800) == 0xD800) {
        if (cp & 0x400 || q[6] != '\\' || q[7] != 'u')
            return 0;
        int lo = hex4(q + 8);
        if (lo < 0 || (lo & 0xFC00) != 0xDC00)
            return 0;
        cp = (((cp & 0x3FF) << 10) | (lo & 0x3FF)) + 0x10000;
        used = 12;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        *len = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        *len = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        *len = 3;
    } else {
        out[0] = (char)(0xF0 | cp >> 18);
        out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        *len = 4;
    }
    return used;
}

/* A string whose opening quote is at p[-1]: its bytes in *out (the text itself, or the scratch
 * buffer when it has escapes) and *len. Returns the byte after the closing quote, or NULL. */
static const uchar *read_string(jdec *d, const uchar *p, const char **out, size_t *len)
{
    const uchar *q = p;
    while (!str_stop[*q])
        q++;
    if (*q == '"') {
        *out = (const char *)p;
        *len = (size_t)(q - p);
        return q + 1;
    }
    size_t o = 0;
    for (;;) {
        size_t run = (size_t)(q - p);
        reserve(d, o + run + 4, o);
        memcpy(d->buf + o, p, run);
        o += run;
        if (*q == '"')
            break;
        if (*q == 0) /* the end of the text, or a NUL in it */
            return fail(d, q, CRM_JDEC_INVALID), NULL;
        uchar c = esc_val[q[1]];
        if (c) {
            d->buf[o++] = (char)c;
            q += 2;
        } else if (q[1] == 'u') {
            int n, used = unicode_escape(q, d->buf + o, &n);
            if (!used)
                return fail(d, q, CRM_JDEC_INVALID), NULL;
            o += (size_t)n;
            q += used;
        } else {
            return fail(d, q, CRM_JDEC_INVALID), NULL;
        }
        p = q;
        while (!str_stop[*q])
            q++;
    }
    *out = d->buf;
    *len = o;
    return q + 1;
}

/* ---- numbers ---- */

static locale_t c_locale;

int crm_jdec_init(void)
{
    if (__atomic_load_n(&c_locale, __ATOMIC_ACQUIRE))
        return 1;
    locale_t loc = newlocale(LC_ALL_MASK, "C", (locale_t)0), none = (locale_t)0;
    if (loc == (locale_t)0)
        return 0;
    if (!__atomic_compare_exchange_n(&c_locale, &none, loc, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        freelocale(loc); /* another thread was first */
    return 1;
}

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The number that starts at p ('-' or a digit): pushes it, returns the byte after it, or NULL. */
static const uchar *read_number(jdec *d, const uchar *p)
{
    const uchar *start = p;
    int neg = *p == '-';
    p += neg;
    uint64_t m = 0; /* the first 19 digits, integer and fraction part together */
    int nd = 0;     /* digits read into m */
    const uchar *int_start = p;
    if (*p == '0') {
        p++;
        if (is_digit(*p) || (*p | 0x20) == 'x') /* leading zeros, hex */
            return fail(d, start, CRM_JDEC_INVALID), NULL;
    } else {
        while (is_digit(*p)) {
            if (nd < 19)
                m = m * 10 + (uint64_t)(*p - '0');
            nd++;
            p++;
        }
    }
    size_t int_digits = (size_t)(p - int_start);
    int frac = 0, frac_digits = 0, exp_given = 0;
    if (*p == '.') {
        frac = 1;
        p++;
        while (is_digit(*p)) {
            if (nd < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                frac_digits++;
            }
            nd++;
            p++;
        }
        /* "1." and "-.5" are numbers to lua-cjson (strtod reads them); "-." is not */
        if (int_digits == 0 && p == int_start + 1)
            return fail(d, start, CRM_JDEC_INVALID), NULL;
    } else if (int_digits == 0) { /* "-" alone, "-Infinity", "-x" */
        return fail(d, start, CRM_JDEC_INVALID), NULL;
    }
    long exp = 0;
    if ((*p | 0x20) == 'e') {
        const uchar *e = p + 1;
        int eneg = *e == '-';
        e += *e == '-' || *e == '+';
        if (!is_digit(*e)) /* "1e": strtod stops before the e, which is then a stray byte */
            return fail(d, p, CRM_JDEC_INVALID), NULL;
        while (is_digit(*e)) {
            if (exp < 100000)
                exp = exp * 10 + (*e - '0');
            e++;
        }
        exp = eneg ? -exp : exp;
        exp_given = 1;
        p = e;
    }
    if (!frac && !exp_given && nd <= 19) {
        if (JDEC_INTEGERS && !(neg && m == 0) && m <= (uint64_t)INT64_MAX + neg) {
            lua_Integer v = m == (uint64_t)INT64_MAX + 1 ? (lua_Integer)INT64_MIN
                          : neg ? -(lua_Integer)m : (lua_Integer)m;
            lua_pushinteger(d->L, v);
        } else { /* the conversion rounds to nearest, as strtod does */
            double v = (double)m;
            lua_pushnumber(d->L, neg ? -v : v);
        }
        return p;
    }
    /* Few digits and a small exponent: m and 10^k are exact doubles, one operation rounds. */
    long e10 = exp - frac_digits;
    if (nd <= 19 && m <= ((uint64_t)1 << 53) && e10 >= -22 && e10 <= 22) {
        double v = (double)m;
        v = e10 < 0 ? v / pow10_exact[-e10] : v * pow10_exact[e10];
        lua_pushnumber(d->L, neg ? -v : v);
        return p;
    }
    /* Otherwise strtod, on a copy that ends where the number ends. */
    size_t len = (size_t)(p - start);
    char tmp[64], *copy = tmp;
    if (len >= sizeof tmp) {
        reserve(d, len + 1, 0);
        copy = d->buf;
    }
    memcpy(copy, start, len);
    copy[len] = '\0';
    char *stop;
    double v = c_locale ? strtod_l(copy, &stop, c_locale) : strtod(copy, &stop);
    if (stop != copy + len)
        return fail(d, start, CRM_JDEC_INVALID), NULL;
    if (isinf(v) && d->range_at == NULL)
        d->range_at = start; /* reported once the whole text is known to be JSON */
    lua_pushnumber(d->L, v);
    return p;
}

/* The bit of a key in an object's `keys`. */
static inline uint64_t key_bit(const char *k, size_t n)
{
    unsigned h = (unsigned)n * 7u;
    if (n)
        h += (uchar)k[0] * 3u + (uchar)k[n - 1] + (uchar)k[n >> 1] * 5u;
    return (uint64_t)1 << (h & 63);
}

/* Moves the waiting members of the open container c into its table (a new one, sized for them,
 * unless it has one), which is then alone at c->start. */
static void flush(lua_State *L, level *c, int mt)
{
    int top = lua_gettop(L), first = c->start + c->has_table, n = top - first + 1, t = c->start;
    if (!c->has_table) {
        if (c->in_obj) {
            lua_createtable(L, 0, n / 2);
        } else {
            lua_createtable(L, n, 0);
            lua_pushvalue(L, mt);
            lua_setmetatable(L, -2);
        }
        t = top + 1;
    }
    if (c->in_obj) {
        for (int i = first; i < first + n; i += 2) {
            lua_pushvalue(L, i);
            lua_pushvalue(L, i + 1);
            lua_rawset(L, t);
        }
    } else {
        for (int i = first; i < first + n; i++) {
            lua_pushvalue(L, i);
            lua_rawseti(L, t, ++c->idx);
        }
    }
    if (t != c->start) {
        lua_replace(L, c->start);
        c->has_table = 1;
    }
    lua_settop(L, c->start);
}

int crm_jdec(lua_State *L, const char *text, size_t n, int keep_nulls, int mt, crm_jdec_err *err)
{
    int base = lua_gettop(L);
    if (!lua_checkstack(L, 8)) {
        err->msg = CRM_JDEC_INVALID;
        err->pos = 1;
        return 0;
    }
    jdec d;
    d.L = L;
    d.s = (const uchar *)text;
    d.end = d.s + n;
    d.buf = d.small;
    d.cap = sizeof d.small;
    d.err = err;
    d.range_at = NULL;
    lua_pushnil(L); /* base + 1: a grown scratch buffer */
    lua_pushnil(L); /* base + 2: the level array, past the first few levels */
    d.buf_slot = base + 1;

    level small_lv[32], *lv = small_lv;
    int lv_cap = (int)(sizeof small_lv / sizeof small_lv[0]);
    int depth = 0;
    level c = {0, 0, 0, 0, 0, 0}; /* the innermost open container (when depth > 0) */
    const uchar *p = skip_ws(d.s);
    const char *k;
    size_t kl;

value: /* p: the first byte of a value */
    switch (*p) {
    case '{':
    case '[': {
        int obj = *p == '{';
        if (depth == CRM_JDEC_MAX_DEPTH)
            goto invalid;
        p = skip_ws(p + 1);
        if (*p == (obj ? '}' : ']')) {
            lua_createtable(L, 0, 0);
            if (!obj) {
                lua_pushvalue(L, mt);
                lua_setmetatable(L, -2);
            }
            p++;
            goto attach;
        }
        if (depth == lv_cap) {
            level *big = jdec_newuserdata(L, CRM_JDEC_MAX_DEPTH * sizeof *big);
            memcpy(big, lv, (size_t)depth * sizeof *big);
            lua_replace(L, base + 2);
            lv = big;
            lv_cap = CRM_JDEC_MAX_DEPTH;
        }
        lv[depth++] = c;
        c.keys = 0;
        c.idx = 0;
        c.in_obj = obj;
        c.has_table = 0;
        c.start = lua_gettop(L) + 1;
        c.cap = depth <= 8 ? 256 : depth <= 100 ? 16 : 0;
        if (c.cap == 0) { /* deep: the table at once, each member into it as it comes */
            lua_createtable(L, 0, 0);
            if (!obj) {
                lua_pushvalue(L, mt);
                lua_setmetatable(L, -2);
            }
            c.has_table = 1;
            c.cap = obj ? 2 : 1;
        }
        if (!lua_checkstack(L, c.cap + 8))
            goto invalid;
        if (obj)
            goto member;
        goto value;
    }
    case '"':
        p = read_string(&d, p + 1, &k, &kl);
        if (p == NULL)
            goto error;
        lua_pushlstring(L, k, kl);
        goto attach;
    case 't':
        if (p[1] != 'r' || p[2] != 'u' || p[3] != 'e')
            goto invalid;
        lua_pushboolean(L, 1);
        p += 4;
        goto attach;
    case 'f':
        if (p[1] != 'a' || p[2] != 'l' || p[3] != 's' || p[4] != 'e')
            goto invalid;
        lua_pushboolean(L, 0);
        p += 5;
        goto attach;
    case 'n':
        if (p[1] != 'u' || p[2] != 'l' || p[3] != 'l')
            goto invalid;
        lua_pushlightuserdata(L, NULL);
        p += 4;
        goto attach;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        p = read_number(&d, p);
        if (p == NULL)
            goto error;
        goto attach;
    default:
        goto invalid;
    }

attach: /* a member of the open container is complete on the stack (or the whole text is) */
    if (depth == 0)
        goto done;
    if (lua_gettop(L) - c.start + 1 - c.has_table >= c.cap)
        flush(L, &c, mt);
separator:
    p = skip_ws(p);
    if (*p == ',') {
        p = skip_ws(p + 1);
        if (c.in_obj)
            goto member;
        goto value;
    }
    if (*p != (c.in_obj ? '}' : ']'))
        goto invalid;
    p++;
    flush(L, &c, mt); /* the container's table, alone at c.start: its parent's member */
    c = lv[--depth];
    goto attach;

member: /* p: the key of an object's member */
    if (*p != '"')
        goto invalid;
    p = read_string(&d, p + 1, &k, &kl);
    if (p == NULL)
        goto error;
    p = skip_ws(p);
    if (*p != ':')
        goto invalid;
    p = skip_ws(p + 1);
    {
        uint64_t bit = key_bit(k, kl);
        if (*p == 'n' && !keep_nulls) {
            if (p[1] != 'u' || p[2] != 'l' || p[3] != 'l')
                goto invalid;
            p += 4;
            if (!(c.keys & bit))
                goto separator; /* dropped: no member of this name came before */
            /* one may have: the pair (key, nil) takes it away (the last one wins) */
            lua_pushlstring(L, k, kl);
            lua_pushnil(L);
            goto attach;
        }
        c.keys |= bit;
    }
    lua_pushlstring(L, k, kl);
    goto value;

done:
    p = skip_ws(p);
    if (p != d.end)
        goto invalid;
    if (d.range_at) {
        fail(&d, d.range_at, CRM_JDEC_RANGE);
        goto error;
    }
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
    return 1;

invalid:
    fail(&d, p, CRM_JDEC_INVALID);
error:
    lua_settop(L, base);
    return 0;
}
