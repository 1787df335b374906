/* The operations of Toast CRM v1 and TableCheck CRM v1 as data. A new endpoint is one row here;
 * crm_op_url runs the row: it checks the ids (Toast: POS GUIDs; TableCheck: ids without path
 * characters), percent-encodes them into the template and appends the query string. Rules for
 * bodies and query values stay in the Lua layer, which names fields the way the docs do. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "json.h"
#include "wire.h"

#define TC_LIST(res) {"tablecheck." res ".list", "GET", "/" res, CRM_ID_TABLECHECK, CRM_SHAPE_OBJECT, CRM_OK_2XX, 0}
/* DELETE gets a connection of its own: libcurl would re-send it on a reused connection that died
 * after the server acted, and the second one's 404 would read as a failure. */
#define TC_CREATE(res) {"tablecheck." res ".create", "POST", "/" res, CRM_ID_TABLECHECK, CRM_SHAPE_OBJECT, CRM_OK_2XX, 0}
#define TC_AMEND(res, id) {"tablecheck." res ".amend", "PUT", "/" res "/{" id "}", CRM_ID_TABLECHECK, CRM_SHAPE_OBJECT, CRM_OK_2XX, 0}
#define TC_DELETE(res, id) {"tablecheck." res ".delete", "DELETE", "/" res "/{" id "}", CRM_ID_TABLECHECK, CRM_SHAPE_OBJECT, CRM_OK_2XX, 1}
#define TC_SHOW(res, id) {"tablecheck." res ".show", "GET", "/" res "/{" id "}", CRM_ID_TABLECHECK, CRM_SHAPE_OBJECT, CRM_OK_2XX, 0}

static const crm_op OPS[] = {
    /* Toast CRM v1: customers, search, credit. Creates answer 202 until confirmed. */
    {"toast.create_customer", "POST", "/crm/v1/customers", CRM_ID_TOAST, CRM_SHAPE_OBJECT, CRM_OK_200, 0},
    {"toast.get_customer", "GET", "/crm/v1/customers/{customerId}", CRM_ID_TOAST, CRM_SHAPE_OBJECT, CRM_OK_2XX, 0},
    {"toast.search_customers", "POST", "/crm/v1/customers/search", CRM_ID_TOAST, CRM_SHAPE_ARRAY, CRM_OK_2XX, 0},
    {"toast.get_credit_summary", "GET", "/crm/v1/customers/{customerId}/creditSummary", CRM_ID_TOAST, CRM_SHAPE_OBJECT, CRM_OK_2XX, 0},
    {"toast.list_customer_credit_transactions", "GET", "/crm/v1/customers/{customerId}/creditTransactions", CRM_ID_TOAST, CRM_SHAPE_ARRAY, CRM_OK_2XX, 0},
    {"toast.list_credit_transactions", "GET", "/crm/v1/creditTransactions", CRM_ID_TOAST, CRM_SHAPE_ARRAY, CRM_OK_2XX, 0},
    {"toast.get_credit_transaction", "GET", "/crm/v1/creditTransactions/{transactionId}", CRM_ID_TOAST, CRM_SHAPE_OBJECT, CRM_OK_2XX, 0},
    {"toast.add_credit", "POST", "/crm/v1/customers/{customerId}/creditTransactions", CRM_ID_TOAST, CRM_SHAPE_OBJECT, CRM_OK_200, 0},
    /* TableCheck CRM v1: customers (images ride on create and amend), search, the rest. */
    TC_LIST("customers"),
    TC_SHOW("customers", "customer_id"),
    TC_CREATE("customers"),
    TC_AMEND("customers", "customer_id"),
    TC_DELETE("customers", "customer_id"),
    /* the first query and every scroll continuation ({scroll_id}) */
    {"tablecheck.customer_search", "POST", "/customer_search", CRM_ID_TABLECHECK, CRM_SHAPE_OBJECT, CRM_OK_2XX, 0},
    TC_LIST("shops"),
    TC_SHOW("shops", "shop_id"),
    TC_LIST("franchises"),
    TC_SHOW("franchises", "franchise_id"),
    TC_LIST("reservations"),
    TC_SHOW("reservations", "reservation_id"),
    TC_CREATE("reservations"),
    TC_AMEND("reservations", "reservation_id"),
    TC_LIST("reservation_flags"),
    TC_SHOW("reservation_flags", "reservation_flag_id"),
    TC_LIST("memberships"),
    TC_SHOW("memberships", "membership_id"),
    TC_CREATE("memberships"),
    TC_AMEND("memberships", "membership_id"),
    TC_DELETE("memberships", "membership_id"),
    TC_LIST("membership_programs"),
    TC_SHOW("membership_programs", "membership_program_id"),
};
#define N_OPS ((int)(sizeof OPS / sizeof OPS[0]))

const crm_op *crm_op_at(lua_State *L, int i)
{
    if (lua_type(L, i) != LUA_TNUMBER)
        return NULL;
    lua_Number n = lua_tonumber(L, i);
    if (!(n >= 1 && n <= N_OPS) || n != floor(n))
        return NULL;
    return &OPS[(int)n - 1];
}

static int hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* 8-4-4-4-12 hex digits. */
static int is_guid(const char *s, size_t n)
{
    if (n != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!hex(s[i])) {
            return 0;
        }
    }
    return 1;
}

static int unreserved(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '-' || c == '_' || c == '.' || c == '~';
}

static int append_escaped(struct buf *b, const char *s, size_t n)
{
    /* Ids are mostly GUIDs and hex: nothing to encode. */
    size_t k = 0;
    while (k < n && unreserved((unsigned char)s[k]))
        k++;
    if (k == n)
        return buf_append(b, s, n);
    char small[384];
    char *tmp = 3 * n <= sizeof small ? small : malloc(3 * n + 1);
    if (tmp == NULL)
        return 0;
    size_t o = crm_escape(s, n, tmp);
    int ok = buf_append(b, tmp, o);
    if (tmp != small)
        free(tmp);
    return ok;
}

/* A query value as crm.http.query wrote it: whole numbers below 2^53 as integers, the rest with
 * Lua's own tostring; booleans as true/false; arrays joined with commas. */
static int append_scalar(lua_State *L, struct buf *b, int i)
{
    char num[64];
    size_t n;
    const char *s;
    switch (lua_type(L, i)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, i, &n);
        return append_escaped(b, s, n);
    case LUA_TBOOLEAN:
        return lua_toboolean(L, i) ? buf_append(b, "true", 4) : buf_append(b, "false", 5);
    case LUA_TNUMBER: {
        lua_Number v = lua_tonumber(L, i);
        if (v == floor(v) && v > -9007199254740992.0 && v < 9007199254740992.0) {
            int len = snprintf(num, sizeof num, "%.0f", (double)v);
            if (v == 0)
                len = snprintf(num, sizeof num, "0"); /* -0 is 0, as %d writes it */
            return append_escaped(b, num, (size_t)len);
        }
        lua_pushvalue(L, i);
        s = lua_tolstring(L, -1, &n);
        int ok = append_escaped(b, s, n);
        lua_pop(L, 1);
        return ok;
    }
    default:
        return -1;
    }
}

static int append_value(lua_State *L, struct buf *b, int i)
{
    if (lua_type(L, i) != LUA_TTABLE)
        return append_scalar(L, b, i);
    /* Items are joined with "," first, then the whole is encoded (commas become %2C). */
    struct buf items = {0};
    int ok = 1;
    for (int k = 1;; k++) {
        lua_rawgeti(L, i, k);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        size_t n;
        const char *s = NULL;
        int t = lua_type(L, -1);
        if (t == LUA_TSTRING || t == LUA_TNUMBER) {
            /* tostring's form (3.0 stays 3.0 on 5.4), as crm.http.query joined items */
            lua_pushvalue(L, -1);
            s = lua_tolstring(L, -1, &n);
        } else if (t == LUA_TBOOLEAN) {
            s = lua_toboolean(L, -1) ? "true" : "false";
            n = strlen(s);
            lua_pushvalue(L, -1);
        } else {
            lua_pop(L, 1);
            ok = -1;
            break;
        }
        ok = (k == 1 || buf_append(&items, ",", 1)) && buf_append(&items, s, n);
        lua_pop(L, 2);
        if (!ok)
            break;
    }
    if (ok == 1)
        ok = append_escaped(b, items.data ? items.data : "", items.len);
    buf_free(&items);
    return ok;
}

/* A query key: its bytes stay alive in the query table. */
struct qkey {
    const char *s;
    size_t n;
};

/* Byte order, a shorter key first (Lua's own order for keys with NUL bytes too). */
static int key_cmp(const void *a, const void *b)
{
    const struct qkey *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* "?k=v&..." in key order from the table at index q. 1 done, 0 memory, -1 a value that is not
 * a string, number, boolean or array of those (or a key that is not a string). */
static int append_query(lua_State *L, struct buf *b, int q)
{
    struct qkey small[32];
    struct qkey *keys = small;
    size_t n = 0, cap = 32;
    lua_pushnil(L);
    while (lua_next(L, q)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            if (keys != small)
                free(keys);
            return -1;
        }
        if (n == cap) {
            struct qkey *k = malloc(2 * cap * sizeof *k);
            if (k == NULL) {
                lua_pop(L, 1);
                if (keys != small)
                    free(keys);
                return 0;
            }
            memcpy(k, keys, n * sizeof *k);
            if (keys != small)
                free(keys);
            keys = k;
            cap *= 2;
        }
        keys[n].s = lua_tolstring(L, -1, &keys[n].n); /* the key stays alive in the table */
        n++;
    }
    if (n > 1)
        qsort(keys, n, sizeof *keys, key_cmp);
    int ok = 1;
    for (size_t i = 0; i < n && ok == 1; i++) {
        ok = buf_append(b, i == 0 ? "?" : "&", 1) && append_escaped(b, keys[i].s, keys[i].n)
             && buf_append(b, "=", 1);
        if (ok != 1)
            break;
        /* the whole key (it may hold NUL bytes), and no metamethod */
        lua_pushlstring(L, keys[i].s, keys[i].n);
        lua_rawget(L, q);
        ok = append_value(L, b, lua_gettop(L));
        lua_pop(L, 1);
    }
    if (keys != small)
        free(keys);
    return ok;
}

const char *crm_op_url(lua_State *L, const crm_op *op, const char *base, size_t base_len, int a,
                       int q, struct buf *url)
{
    static _Thread_local char names[2][64]; /* one per thread: Lua states may run on several */
    if (!buf_append(url, base, base_len))
        return "memory";
    const char *p = op->path;
    int arg = 0;
    while (*p) {
        const char *open = strchr(p, '{');
        if (open == NULL) {
            if (!buf_append(url, p, strlen(p)))
                return "memory";
            break;
        }
        const char *close = strchr(open, '}');
        if (!buf_append(url, p, (size_t)(open - p)))
            return "memory";
        size_t name_len = (size_t)(close - open - 1);
        size_t n = 0;
        const char *id = lua_type(L, a + arg) == LUA_TSTRING ? lua_tolstring(L, a + arg, &n) : NULL;
        int fine = id != NULL && (op->id_kind == CRM_ID_TOAST ? is_guid(id, n) : crm_is_path_id(id, n));
        if (!fine) {
            char *out = names[arg];
            if (name_len >= sizeof names[0])
                name_len = sizeof names[0] - 1;
            memcpy(out, open + 1, name_len);
            out[name_len] = '\0';
            return out;
        }
        /* A Toast GUID is hex and dashes: nothing to encode. */
        if (!(op->id_kind == CRM_ID_TOAST ? buf_append(url, id, n) : append_escaped(url, id, n)))
            return "memory";
        arg++;
        p = close + 1;
    }
    if (lua_type(L, q) == LUA_TTABLE) {
        int ok = append_query(L, url, q);
        if (ok == 0)
            return "memory";
        if (ok < 0)
            return "query";
    } else if (lua_type(L, q) == LUA_TSTRING) {
        /* A query string built by the caller goes out as it is, so it must already be encoded:
         * a control character, a space or a byte past ASCII would reach the request line. */
        size_t n;
        const char *s = lua_tolstring(L, q, &n);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
                return "query";
        if (!buf_append(url, s, n))
            return "memory";
    }
    return NULL;
}

int crm_op_shape_ok(lua_State *L, const crm_op *op, int i)
{
    if (op->shape == CRM_SHAPE_ANY || lua_isnil(L, i))
        return 1;
    if (lua_type(L, i) != LUA_TTABLE)
        return 0;
    /* Decoded arrays carry crm.json's array_mt, empty ones too: [] is not an object, {} not an
     * array. */
    int is_array = 0;
    if (lua_getmetatable(L, i)) {
        crm_push_array_mt(L);
        is_array = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return op->shape == CRM_SHAPE_ARRAY ? is_array : !is_array;
}

int crm_op_status_ok(const crm_op *op, long status)
{
    if (op->ok == CRM_OK_200)
        return status == 200;
    return status >= 200 && status < 300;
}

/* nil, {kind = "validation", name, code = 0, message, sent = false}: the shape of the C core's
 * other errors (core.c's push_error), for arguments core.build cannot use. */
static int build_error(lua_State *L, const char *name, const char *msg)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 5);
    lua_pushliteral(L, "validation");
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "sent");
    return 2;
}

/* core.build(op, base, a1, a2, query) -> method, url, fresh | false, field | nil, err
 * (field: the id argument that is not an id of its API, or "query"; err: a bad op, or a base
 * that is not a string or holds a control character or a space, as h:call refuses it) */
static int l_build(lua_State *L)
{
    const crm_op *op = crm_op_at(L, 1);
    if (op == NULL)
        return build_error(L, "bad_op", "not an operation of core.ops");
    int bt = lua_type(L, 2);
    if (bt != LUA_TSTRING && bt != LUA_TNUMBER)
        return build_error(L, "bad_url", "the base URL must be a string");
    size_t base_len;
    const char *base = lua_tolstring(L, 2, &base_len);
    if (crm_has_ctl(base, base_len) || memchr(base, ' ', base_len))
        return build_error(L, "bad_url", "url contains a control character or space");
    lua_settop(L, 5);
    struct buf url = {0};
    const char *bad = crm_op_url(L, op, base, base_len, 3, 5, &url);
    if (bad) {
        buf_free(&url);
        if (strcmp(bad, "memory") == 0)
            return luaL_error(L, "crm.core: out of memory");
        lua_pushboolean(L, 0);
        lua_pushstring(L, bad);
        return 2;
    }
    lua_pushstring(L, op->method);
    lua_pushlstring(L, url.data, url.len);
    lua_pushboolean(L, op->fresh);
    buf_free(&url);
    return 3;
}

/* core.op_info(op) -> name, method, path, shape ("object" | "array" | nil), ok ("200" | "2xx") */
static int l_op_info(lua_State *L)
{
    const crm_op *op = crm_op_at(L, 1);
    if (op == NULL)
        return luaL_argerror(L, 1, "not an operation of core.ops");
    lua_pushstring(L, op->name);
    lua_pushstring(L, op->method);
    lua_pushstring(L, op->path);
    if (op->shape == CRM_SHAPE_OBJECT)
        lua_pushliteral(L, "object");
    else if (op->shape == CRM_SHAPE_ARRAY)
        lua_pushliteral(L, "array");
    else
        lua_pushnil(L);
    lua_pushstring(L, op->ok == CRM_OK_200 ? "200" : "2xx");
    return 5;
}

void crm_ops_register(lua_State *L)
{
    lua_createtable(L, 0, N_OPS);
    for (int i = 0; i < N_OPS; i++) {
        lua_pushinteger(L, i + 1);
        lua_setfield(L, -2, OPS[i].name);
    }
    lua_setfield(L, -2, "ops");
    lua_pushcfunction(L, l_build);
    lua_setfield(L, -2, "build");
    lua_pushcfunction(L, l_op_info);
    lua_setfield(L, -2, "op_info");
}
