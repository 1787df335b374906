/* crm.core: the narrow C layer. A libcurl handle per client, GUIDs, a monotonic clock, sleep and
 * percent-encoding. No policy lives here: retries, auth and JSON shapes belong to the Lua layer. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <uuid/uuid.h>

/* The oldest libcurl the core builds against: CURLOPT_PROTOCOLS_STR arrived in 7.85.0. */
#if LIBCURL_VERSION_NUM < 0x075500
#error "crm needs libcurl >= 7.85.0 (CURLOPT_PROTOCOLS_STR); install a newer libcurl development package"
#endif

#include "compat.h"
#include "wire.h"
#include "buf.h"
#include "json.h"
#include "ops.h"
#include "sys.h"
#include "http1.h"

/* The version comes from lua/crm/version.lua, passed by the Makefile (make, and the rock's build)
 * as -DCRM_VERSION="\"x.y.z\"": it is never written here. */
#ifndef CRM_VERSION
#error "CRM_VERSION is not set: build with make (it reads lua/crm/version.lua) or luarocks"
#endif
#define CRM_HANDLE_MT "crm.core.handle"
#define CRM_MULTI_MT "crm.core.multi"
#define CRM_DEFAULT_MAX_RESPONSE (16L * 1024 * 1024)

typedef struct {
    CURL *curl;
    struct buf body;
    struct buf head;
    size_t max_response;
    int too_large;
    long timeout_ms;
    struct curl_slist *headers; /* of the request in flight, when it owns them */
    int busy;                   /* multi slots: a request is in flight */
    const crm_op *op;           /* the operation in flight (core.ops), or NULL for request() */
    struct hset *hs_pin;        /* multi slots: the header set of the call in flight (pinned) */
    struct buf url;             /* the URL being built (kept: a client allocates once) */
    /* What the handle is set to now, so a request sets only what changes (-1: not known). */
    long set_timeout;
    int set_fresh;
    int set_mode; /* 0 GET without a body, 1 POST with one, 2 another method, 3 HEAD */
    char errbuf[CURL_ERROR_SIZE];
} handle_t;

/* ---- libcurl callbacks: plain C, they never touch the Lua state ---- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    handle_t *h = ud;
    size_t n = size * nmemb;
    if (h->body.len + n > h->max_response) {
        h->too_large = 1;
        return 0;
    }
    return buf_append(&h->body, p, n) ? n : 0;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    handle_t *h = ud;
    size_t n = size * nmemb;
    /* A new status line (after 1xx or an auth round) starts a fresh header block. */
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0)
        h->head.len = 0;
    if (h->head.len + n > h->max_response) {
        h->too_large = 1;
        return 0;
    }
    return buf_append(&h->head, p, n) ? n : 0;
}

/* ---- errors: plain tables that the Lua layer turns into crm errors ---- */

static const char *curl_code_name(CURLcode c)
{
    switch (c) {
    case CURLE_UNSUPPORTED_PROTOCOL: return "CURLE_UNSUPPORTED_PROTOCOL";
    case CURLE_URL_MALFORMAT: return "CURLE_URL_MALFORMAT";
    case CURLE_COULDNT_RESOLVE_PROXY: return "CURLE_COULDNT_RESOLVE_PROXY";
    case CURLE_COULDNT_RESOLVE_HOST: return "CURLE_COULDNT_RESOLVE_HOST";
    case CURLE_COULDNT_CONNECT: return "CURLE_COULDNT_CONNECT";
    case CURLE_WEIRD_SERVER_REPLY: return "CURLE_WEIRD_SERVER_REPLY";
    case CURLE_HTTP2: return "CURLE_HTTP2";
    case CURLE_PARTIAL_FILE: return "CURLE_PARTIAL_FILE";
    case CURLE_WRITE_ERROR: return "CURLE_WRITE_ERROR";
    case CURLE_READ_ERROR: return "CURLE_READ_ERROR";
    case CURLE_OUT_OF_MEMORY: return "CURLE_OUT_OF_MEMORY";
    case CURLE_OPERATION_TIMEDOUT: return "CURLE_OPERATION_TIMEDOUT";
    case CURLE_SSL_CONNECT_ERROR: return "CURLE_SSL_CONNECT_ERROR";
    case CURLE_TOO_MANY_REDIRECTS: return "CURLE_TOO_MANY_REDIRECTS";
    case CURLE_GOT_NOTHING: return "CURLE_GOT_NOTHING";
    case CURLE_SEND_ERROR: return "CURLE_SEND_ERROR";
    case CURLE_RECV_ERROR: return "CURLE_RECV_ERROR";
    case CURLE_SSL_CERTPROBLEM: return "CURLE_SSL_CERTPROBLEM";
    case CURLE_PEER_FAILED_VERIFICATION: return "CURLE_PEER_FAILED_VERIFICATION";
    case CURLE_FILESIZE_EXCEEDED: return "CURLE_FILESIZE_EXCEEDED";
    case CURLE_SSL_CACERT_BADFILE: return "CURLE_SSL_CACERT_BADFILE";
    case CURLE_HTTP2_STREAM: return "CURLE_HTTP2_STREAM";
    case CURLE_ABORTED_BY_CALLBACK: return "CURLE_ABORTED_BY_CALLBACK";
    case CURLE_BAD_FUNCTION_ARGUMENT: return "CURLE_BAD_FUNCTION_ARGUMENT";
    default: return NULL;
    }
}

/* Pushes nil and an error table {kind, code, name, message, sent}; returns 2. */
static int push_error(lua_State *L, const char *kind, const char *name, int code, const char *msg,
                      int sent)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, sent);
    lua_setfield(L, -2, "sent");
    return 2;
}

/* ---- the handle ---- */

static handle_t *check_open(lua_State *L)
{
    handle_t *h = luaL_checkudata(L, 1, CRM_HANDLE_MT);
    return h->curl ? h : NULL;
}

static void handle_release(handle_t *h)
{
    curl_slist_free_all(h->headers);
    h->headers = NULL;
    if (h->curl) {
        curl_easy_cleanup(h->curl);
        h->curl = NULL;
    }
    buf_free(&h->body);
    buf_free(&h->head);
    buf_free(&h->url);
}

static int l_handle_close(lua_State *L)
{
    handle_release(luaL_checkudata(L, 1, CRM_HANDLE_MT));
    return 0;
}

static int l_handle_closed(lua_State *L)
{
    handle_t *h = luaL_checkudata(L, 1, CRM_HANDLE_MT);
    lua_pushboolean(L, h->curl == NULL);
    return 1;
}

static double opt_number(lua_State *L, int t, const char *k, double dflt)
{
    lua_getfield(L, t, k);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

static const char *opt_string(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the string stays referenced by the options table */
    return v;
}

static int opt_bool(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static long to_ms(double seconds)
{
    if (!(seconds > 0))
        return 0;
    if (seconds > 86400.0)
        seconds = 86400.0;
    long ms = (long)(seconds * 1000.0);
    return ms < 1 ? 1 : ms;
}

/* Creates h->curl with the options in the table at index t; pushes nothing on success.
 * Returns 0, or pushes nil, err and returns 2. */
static int setup_easy(lua_State *L, int t, handle_t *h)
{
    h->curl = curl_easy_init();
    if (h->curl == NULL)
        return push_error(L, "transport", "CURLE_FAILED_INIT", CURLE_FAILED_INIT,
                          "libcurl could not create a handle", 0);

    double max = opt_number(L, t, "max_response_bytes", (double)CRM_DEFAULT_MAX_RESPONSE);
    h->max_response = max >= 1 && max < 1e15 ? (size_t)max : (size_t)CRM_DEFAULT_MAX_RESPONSE;
    h->timeout_ms = to_ms(opt_number(L, t, "timeout", 30.0));
    long connect_ms = to_ms(opt_number(L, t, "connect_timeout", 10.0));
    const char *ua = opt_string(L, t, "user_agent");
    const char *cafile = opt_string(L, t, "cafile");
    const char *capath = opt_string(L, t, "capath");
    int insecure = opt_bool(L, t, "insecure_skip_verify");

    CURL *c = h->curl;
    h->set_timeout = h->timeout_ms;
    h->set_fresh = 0;
    h->set_mode = -1;
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(c, CURLOPT_PRIVATE, h);
    curl_easy_setopt(c, CURLOPT_USERAGENT, ua ? ua : "crm/" CRM_VERSION);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, insecure ? 0L : 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, insecure ? 0L : 2L);
    if (cafile && curl_easy_setopt(c, CURLOPT_CAINFO, cafile) != CURLE_OK)
        return push_error(L, "transport", "CURLE_BAD_FUNCTION_ARGUMENT", CURLE_BAD_FUNCTION_ARGUMENT,
                          "cafile could not be set", 0);
    if (capath)
        curl_easy_setopt(c, CURLOPT_CAPATH, capath);
    /* Proxies: only the one named by the `proxy` option. The empty string turns off libcurl's
     * reading of http_proxy, https_proxy, ALL_PROXY and NO_PROXY, so an environment variable
     * never routes tokens and customer data through a host the caller did not choose. */
    const char *proxy = opt_string(L, t, "proxy");
    if (curl_easy_setopt(c, CURLOPT_PROXY, proxy ? proxy : "") != CURLE_OK)
        return push_error(L, "validation", "bad_proxy", 0, "proxy could not be set", 0);
    if (proxy)
        curl_easy_setopt(c, CURLOPT_NOPROXY, "");
    return 0;
}

/* libcurl's global state is set up when the first handle is made, not when crm.core loads;
 * once per process, whatever thread (and Lua state) gets there first. */
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void global_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);
}

/* The constructors' options table, `{}` when none is given, at stack index 1. */
static void options_at_1(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
}

/* core.new{timeout, connect_timeout, cafile, capath, insecure_skip_verify, user_agent,
 *          max_response_bytes} -> handle | nil, err */
static int l_new(lua_State *L)
{
    options_at_1(L);
    global_init();

    handle_t *h = lua_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    luaL_getmetatable(L, CRM_HANDLE_MT);
    lua_setmetatable(L, -2);
    int rc = setup_easy(L, 1, h);
    return rc ? rc : 1;
}

/* Repeated headers are joined with ", " as HTTP allows; names arrive lower-cased. */
static void add_header(void *ud, const char *name, size_t nl, const char *v, size_t vl)
{
    lua_State *L = ud;
    lua_pushlstring(L, name, nl);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isstring(L, -1)) {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, vl);
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, vl);
    }
    lua_rawset(L, -3);
}

/* http_head(bytes, limit) -> minor, status, headers, body position (1-based), Content-Length
 * (nil unless one line gives it as plain digits) | nil: the ngx transport's usual answer head
 * (src/http1.c); nil when the transport's Lua reader must read it. */
static int l_http_head(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_Number limit = luaL_checknumber(L, 2);
    size_t lim = 0; /* also for NaN */
    if (limit >= (lua_Number)n)
        lim = n;
    else if (limit > 0)
        lim = (size_t)limit;
    crm_http1_head head;
    lua_settop(L, 2);
    lua_createtable(L, 0, 8);
    if (!crm_http1_parse_head(s, n, lim, add_header, L, &head)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, head.minor);
    lua_pushinteger(L, head.status);
    lua_pushvalue(L, 3);
    lua_pushinteger(L, (lua_Integer)head.body + 1);
    if (head.length >= 0)
        lua_pushinteger(L, (lua_Integer)head.length); /* 15 digits at most */
    else
        lua_pushnil(L);
    return 5;
}

/* A test of a string argument's bytes, as a Lua boolean. */
static int push_test(lua_State *L, int (*test)(const char *s, size_t n))
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_pushboolean(L, test(s, n));
    return 1;
}

/* url_unsafe(s) -> whether s has a control character or a space (the ngx transport's URL check) */
static int l_url_unsafe(lua_State *L)
{
    return push_test(L, crm_http1_url_unsafe);
}

/* Response headers are handed over as one raw block and parsed on first lookup: most calls
 * never read a header, and this keeps a dozen strings per request out of the collector. */
#define CRM_HEADERS_MT "crm.core.headers"
#define CRM_RAW_KEY ":raw" /* a header name cannot contain ':' */

/* Raw access only: a plain lookup of the missing key would land in __index again. */
static void parse_pending(lua_State *L, int t)
{
    lua_pushliteral(L, CRM_RAW_KEY);
    lua_rawget(L, t);
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *raw = lua_tolstring(L, -1, &n);
        lua_pushliteral(L, CRM_RAW_KEY);
        lua_pushnil(L);
        lua_rawset(L, t);
        lua_pushvalue(L, t);
        crm_parse_headers(raw, n, add_header, L);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static int l_headers_index(lua_State *L)
{
    parse_pending(L, 1);
    lua_settop(L, 2);
    lua_rawget(L, 1);
    return 1;
}

static int l_headers_pairs(lua_State *L)
{
    parse_pending(L, 1);
    lua_getglobal(L, "next");
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static void push_headers(lua_State *L, const struct buf *b)
{
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    lua_setfield(L, -2, CRM_RAW_KEY);
    luaL_getmetatable(L, CRM_HEADERS_MT);
    lua_setmetatable(L, -2);
}

static void set_transfer(handle_t *h, const char *method, size_t mlen, const char *url,
                         struct curl_slist *list, const char *body, size_t blen, double timeout,
                         int fresh, int copy_body);
static int list_from(lua_State *L, int i, int expect, struct curl_slist **out);

/* Sets up h for the request whose arguments start at stack index `a`:
 * method, url, headers (array of "Name: value"), body (string or nil), timeout (seconds or nil),
 * fresh (true for a request that must not be sent twice: libcurl silently re-sends a request
 * whose reused connection turns out dead, so such a request gets a new connection of its own).
 * `copy_body` is for multi transfers, which outlive the Lua string. Returns 0, or pushes
 * nil, err and returns 2. */
static int prepare(lua_State *L, handle_t *h, int a, int copy_body)
{
    size_t mlen, ulen, blen = 0;
    const char *method = luaL_checklstring(L, a, &mlen);
    const char *url = luaL_checklstring(L, a + 1, &ulen);
    const char *body = NULL;
    if (!lua_isnoneornil(L, a + 3))
        body = luaL_checklstring(L, a + 3, &blen);
    double timeout = luaL_optnumber(L, a + 4, 0);
    int fresh = lua_toboolean(L, a + 5);

    if (crm_has_ctl(url, ulen) || memchr(url, ' ', ulen))
        return push_error(L, "validation", "bad_url", 0, "url contains a control character or space", 0);
    if (crm_has_ctl(method, mlen) || mlen == 0 || mlen > 16)
        return push_error(L, "validation", "bad_method", 0, "method is not a valid HTTP method", 0);

    /* Expect: 100-continue only ever matters with a body: it is turned off there. */
    struct curl_slist *list = NULL;
    if (lua_isnoneornil(L, a + 2)) {
        if (body && (list = curl_slist_append(NULL, "Expect:")) == NULL)
            return push_error(L, "transport", "CURLE_OUT_OF_MEMORY", CURLE_OUT_OF_MEMORY,
                              "out of memory building headers", 0);
    } else {
        luaL_checktype(L, a + 2, LUA_TTABLE);
        int rc = list_from(L, a + 2, body != NULL, &list);
        if (rc)
            return rc;
    }
    h->op = NULL;
    h->headers = list;
    set_transfer(h, method, mlen, url, list, body, blen, timeout, fresh, copy_body);
    return 0;
}

static void set_transfer(handle_t *h, const char *method, size_t mlen, const char *url,
                         struct curl_slist *list, const char *body, size_t blen, double timeout,
                         int fresh, int copy_body)
{
    CURL *c = h->curl;
    h->body.len = 0;
    h->head.len = 0;
    h->too_large = 0;
    h->errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    long timeout_ms = timeout > 0 ? to_ms(timeout) : h->timeout_ms;
    if (timeout_ms != h->set_timeout) {
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
        h->set_timeout = timeout_ms;
    }
    if ((fresh != 0) != h->set_fresh) {
        curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, fresh ? 1L : 0L);
        h->set_fresh = fresh != 0;
    }
    int mode;
    if (mlen == 4 && memcmp(method, "HEAD", 4) == 0)
        mode = 3;
    else if (mlen == 3 && memcmp(method, "GET", 3) == 0 && !body)
        mode = 0;
    else if (mlen == 4 && memcmp(method, "POST", 4) == 0 && body)
        mode = 1;
    else
        mode = 2;
    /* A GET after a GET needs nothing more; every other request sets its method afresh. */
    if (mode == 0 && h->set_mode == 0)
        return;
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        curl_easy_setopt(c, copy_body ? CURLOPT_COPYPOSTFIELDS : CURLOPT_POSTFIELDS, body);
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    if (mode == 3)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (mode == 2)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    h->set_mode = mode;
}

/* An operation's answer: pushes status, data, headers (nil when done), done, decode_error; returns 5.
 * data is the decoded body (nil for 204 or an empty body, and for an undecodable error answer);
 * done says the status and the body's shape are what the operation succeeds with; decode_error
 * is the message when a 2xx body is not JSON (done is then false). */
static int push_answer(lua_State *L, handle_t *h, long status)
{
    const crm_op *op = h->op;
    h->op = NULL;
    lua_pushinteger(L, status);
    int top = lua_gettop(L);
    const char *derr = NULL;
    if (h->body.len > 0 && status != 204) {
        if (crm_decode_push(L, h->body.data, h->body.len, 0) == 2) {
            /* nil, message: the message is one of two constants; nil stays as the data */
            const char *msg = lua_tostring(L, -1);
            if (status >= 200 && status < 300)
                derr = msg && strcmp(msg, CRM_OUT_OF_RANGE) == 0 ? CRM_OUT_OF_RANGE : CRM_NOT_JSON;
            lua_pop(L, 1);
        }
    } else {
        lua_pushnil(L);
    }
    int done = derr == NULL && crm_op_status_ok(op, status) && crm_op_shape_ok(L, op, top + 1);
    /* The headers matter when the call did not succeed (content-type, retry-after): only then
     * is their table made. */
    if (done)
        lua_pushnil(L);
    else
        push_headers(L, &h->head);
    lua_pushboolean(L, done);
    if (derr)
        lua_pushstring(L, derr);
    else
        lua_pushnil(L);
    return 5;
}

/* After a transfer: pushes status, headers, body, or nil, err. Returns the count pushed. */
static int finish(lua_State *L, handle_t *h, CURLcode rc)
{
    CURL *c = h->curl;
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    if (h->set_mode != 0) {
        /* libcurl may keep a pointer to the body: let go of it (the next request sets its own) */
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
        h->set_mode = -1;
    }
    curl_slist_free_all(h->headers);
    h->headers = NULL;

    if (rc != CURLE_OK) {
        long sent = 0;
        curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &sent);
        if (h->too_large)
            return push_error(L, "transport", "response_too_large", rc,
                              "response exceeds max_response_bytes", sent > 0);
        const char *name = curl_code_name(rc);
        char namebuf[32];
        if (name == NULL) {
            snprintf(namebuf, sizeof namebuf, "CURLE_%d", (int)rc);
            name = namebuf;
        }
        const char *msg = h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc);
        return push_error(L, rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "transport", name, rc, msg,
                          sent > 0);
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (h->op)
        return push_answer(L, h, status);
    lua_pushinteger(L, status);
    push_headers(L, &h->head);
    lua_pushlstring(L, h->body.data ? h->body.data : "", h->body.len);
    return 3;
}

/* h:request(method, url, headers, body [, timeout_seconds [, fresh]])
 *   -> status, headers, body | nil, err */
static int l_request(lua_State *L)
{
    handle_t *h = check_open(L);
    if (h == NULL)
        return push_error(L, "transport", "closed", 0, "the client is closed", 0);
    int rc = prepare(L, h, 2, 0);
    if (rc)
        return rc;
    return finish(L, h, curl_easy_perform(h->curl));
}

/* ---- header sets: a client's header lines as libcurl lists, rebuilt only when they change ---- */

#define CRM_HSET_MT "crm.core.header_set"

typedef struct hset {
    struct curl_slist *get;  /* requests without a body */
    struct curl_slist *body; /* requests with one: the same lines and "Expect:" */
    int uses;                /* transfers in flight with these lists */
    int closed;
} hset_t;

static void hset_free_lists(hset_t *hs)
{
    curl_slist_free_all(hs->get);
    curl_slist_free_all(hs->body);
    hs->get = hs->body = NULL;
}

static int l_hset_close(lua_State *L)
{
    hset_t *hs = luaL_checkudata(L, 1, CRM_HSET_MT);
    hs->closed = 1;
    if (hs->uses == 0)
        hset_free_lists(hs);
    return 0;
}

/* The array at index i as a list (with "Expect:" first when `expect`). Returns 0, or pushes
 * nil, err and returns 2 (*out is then freed). */
static int list_from(lua_State *L, int i, int expect, struct curl_slist **out)
{
    struct curl_slist *list = expect ? curl_slist_append(NULL, "Expect:") : NULL;
    if (expect && list == NULL)
        return push_error(L, "transport", "CURLE_OUT_OF_MEMORY", CURLE_OUT_OF_MEMORY,
                          "out of memory building headers", 0);
    for (int k = 1;; k++) {
        lua_rawgeti(L, i, k);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        size_t hl;
        const char *hv = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &hl) : NULL;
        if (hv == NULL || crm_has_ctl(hv, hl) || crm_has_non_ascii(hv, hl)) {
            lua_pop(L, 1);
            curl_slist_free_all(list);
            return push_error(L, "validation", "bad_header", 0,
                              "header contains CR, LF, NUL or a non-ASCII byte, or is not a string", 0);
        }
        struct curl_slist *nl = curl_slist_append(list, hv);
        lua_pop(L, 1);
        if (nl == NULL) {
            curl_slist_free_all(list);
            return push_error(L, "transport", "CURLE_OUT_OF_MEMORY", CURLE_OUT_OF_MEMORY,
                              "out of memory building headers", 0);
        }
        list = nl;
    }
    *out = list;
    return 0;
}

/* core.header_set(lines_without_body, lines_with_body) -> set | nil, err */
static int l_header_set(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    hset_t *hs = lua_newuserdata(L, sizeof *hs);
    memset(hs, 0, sizeof *hs);
    luaL_getmetatable(L, CRM_HSET_MT);
    lua_setmetatable(L, -2);
    int rc = list_from(L, 1, 0, &hs->get);
    if (rc)
        return rc;
    rc = list_from(L, 2, 1, &hs->body);
    if (rc) {
        hset_free_lists(hs);
        return rc;
    }
    return 1;
}

/* Sets up h for the operation whose arguments start at stack index 2:
 * base, header set, op, id1, id2, query, body (JSON text or nil), timeout, fresh.
 * Returns 0; or pushes false, field (an id or the query that the op refuses) and returns 2; or
 * pushes nil, err and returns 2. On 0, *hs_out holds the set in use. */
static int prepare_op(lua_State *L, handle_t *h, int copy_body, hset_t **hs_out)
{
    size_t base_len, blen = 0;
    const char *base = luaL_checklstring(L, 2, &base_len);
    hset_t *hs = luaL_checkudata(L, 3, CRM_HSET_MT);
    const crm_op *op = crm_op_at(L, 4);
    if (op == NULL)
        return luaL_argerror(L, 4, "not an operation of core.ops");
    const char *body = lua_isnoneornil(L, 8) ? NULL : luaL_checklstring(L, 8, &blen);
    double timeout = luaL_optnumber(L, 9, 0);
    int fresh = lua_toboolean(L, 10) || op->fresh;
    if (hs->closed)
        return push_error(L, "transport", "closed", 0, "the header set is closed", 0);
    h->url.len = 0;
    const char *bad = crm_op_url(L, op, base, base_len, 5, 7, &h->url);
    if (bad) {
        if (strcmp(bad, "memory") == 0)
            return push_error(L, "transport", "CURLE_OUT_OF_MEMORY", CURLE_OUT_OF_MEMORY,
                              "out of memory building the URL", 0);
        lua_pushboolean(L, 0);
        lua_pushstring(L, bad);
        return 2;
    }
    /* The ids and the query are checked and percent-encoded: only the base can hold such bytes. */
    if (crm_has_ctl(base, base_len) || memchr(base, ' ', base_len))
        return push_error(L, "validation", "bad_url", 0, "url contains a control character or space", 0);
    h->headers = NULL;
    set_transfer(h, op->method, strlen(op->method), h->url.data, body ? hs->body : hs->get, body,
                 blen, timeout, fresh, copy_body);
    h->op = op;
    *hs_out = hs;
    return 0;
}

/* h:call(base, header_set, op, id1, id2, query, body, timeout, fresh)
 *   -> status, data, headers, done, decode_error | false, field | nil, err
 * One exchange of an operation of core.ops: URL built and checked here, the set's header lists,
 * the answer decoded (crm.json's rules) and judged against the operation. No retries. */
static int l_call(lua_State *L)
{
    handle_t *h = check_open(L);
    if (h == NULL)
        return push_error(L, "transport", "closed", 0, "the client is closed", 0);
    lua_settop(L, 10);
    hset_t *hs = NULL;
    int rc = prepare_op(L, h, 0, &hs);
    if (rc)
        return rc;
    hs->uses++;
    CURLcode code = curl_easy_perform(h->curl);
    hs->uses--;
    rc = finish(L, h, code);
    h->op = NULL;
    if (hs->closed && hs->uses == 0)
        hset_free_lists(hs);
    return rc;
}

/* ---- multi: a pool of handles run concurrently with curl's multi interface ---- */

typedef struct {
    CURLM *multi;
    int size;
    int busy;
    handle_t *slots;
    int pins_ref; /* registry reference to {slot = header set of the call in flight}, or LUA_NOREF */
} multi_t;

static multi_t *check_multi(lua_State *L)
{
    return luaL_checkudata(L, 1, CRM_MULTI_MT);
}

static void multi_release(multi_t *m)
{
    if (m->slots) {
        for (int i = 0; i < m->size; i++) {
            if (m->slots[i].curl && m->multi)
                curl_multi_remove_handle(m->multi, m->slots[i].curl);
            handle_release(&m->slots[i]);
        }
        free(m->slots);
        m->slots = NULL;
    }
    if (m->multi) {
        curl_multi_cleanup(m->multi);
        m->multi = NULL;
    }
    m->busy = 0;
}

static void release_hset(lua_State *L, multi_t *m, handle_t *h);

/* The first slot with no transfer in flight, or -1. */
static int free_slot(const multi_t *m)
{
    for (int i = 0; i < m->size; i++)
        if (!m->slots[i].busy)
            return i;
    return -1;
}

static int l_multi_close(lua_State *L)
{
    multi_t *m = check_multi(L);
    if (m->slots) {
        for (int i = 0; i < m->size; i++)
            release_hset(L, m, &m->slots[i]);
    }
    if (m->pins_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, m->pins_ref);
        m->pins_ref = LUA_NOREF;
    }
    multi_release(m);
    return 0;
}

/* core.multi{size = N, <the same options as core.new>} -> multi | nil, err */
static int l_multi(lua_State *L)
{
    options_at_1(L);
    global_init();
    double size = opt_number(L, 1, "size", 16);
    if (!(size >= 1 && size <= 1024))
        return push_error(L, "validation", "bad_size", 0, "size must be 1 to 1024", 0);

    multi_t *m = lua_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    m->pins_ref = LUA_NOREF;
    luaL_getmetatable(L, CRM_MULTI_MT);
    lua_setmetatable(L, -2);
    lua_newtable(L);
    m->pins_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    m->multi = curl_multi_init();
    m->slots = calloc((size_t)size, sizeof *m->slots);
    if (m->multi == NULL || m->slots == NULL)
        return push_error(L, "transport", "CURLE_OUT_OF_MEMORY", CURLE_OUT_OF_MEMORY,
                          "libcurl could not create a multi handle", 0);
    m->size = (int)size;
    curl_multi_setopt(m->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)m->size);
    for (int i = 0; i < m->size; i++) {
        int rc = setup_easy(L, 1, &m->slots[i]);
        if (rc)
            return rc;
    }
    return 1;
}

/* m:submit(method, url, headers, body [, timeout [, fresh]]) -> slot | nil, err (no free slot: "busy") */
static int l_multi_submit(lua_State *L)
{
    multi_t *m = check_multi(L);
    if (m->multi == NULL)
        return push_error(L, "transport", "closed", 0, "the batch is closed", 0);
    int slot = free_slot(m);
    if (slot < 0)
        return push_error(L, "transport", "busy", 0, "every slot is in flight", 0);
    handle_t *h = &m->slots[slot];
    int rc = prepare(L, h, 2, 1);
    if (rc)
        return rc;
    if (curl_multi_add_handle(m->multi, h->curl) != CURLM_OK) {
        curl_slist_free_all(h->headers);
        h->headers = NULL;
        return push_error(L, "transport", "CURLM_ADD", 0, "libcurl refused the transfer", 0);
    }
    h->busy = 1;
    m->busy++;
    lua_pushinteger(L, slot + 1);
    return 1;
}

/* m:submit_call(base, header_set, op, id1, id2, query, body, timeout, fresh)
 *   -> slot | false, field | nil, err: h:call's exchange, run by m:wait. */
static int l_multi_submit_call(lua_State *L)
{
    multi_t *m = check_multi(L);
    if (m->multi == NULL)
        return push_error(L, "transport", "closed", 0, "the batch is closed", 0);
    int slot = free_slot(m);
    if (slot < 0)
        return push_error(L, "transport", "busy", 0, "every slot is in flight", 0);
    lua_settop(L, 10);
    handle_t *h = &m->slots[slot];
    hset_t *hs = NULL;
    int rc = prepare_op(L, h, 1, &hs);
    if (rc)
        return rc;
    if (curl_multi_add_handle(m->multi, h->curl) != CURLM_OK) {
        h->op = NULL;
        return push_error(L, "transport", "CURLM_ADD", 0, "libcurl refused the transfer", 0);
    }
    hs->uses++;
    /* The header set stays alive while libcurl holds its lists: filed under the slot. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, m->pins_ref);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, slot + 1);
    lua_pop(L, 1);
    h->hs_pin = hs;
    h->busy = 1;
    m->busy++;
    lua_pushinteger(L, slot + 1);
    return 1;
}

/* Lets go of the header set a finished (or dropped) multi transfer used. */
static void release_hset(lua_State *L, multi_t *m, handle_t *h)
{
    hset_t *hs = h->hs_pin;
    if (hs == NULL)
        return;
    h->hs_pin = NULL;
    hs->uses--;
    if (hs->closed && hs->uses == 0)
        hset_free_lists(hs);
    if (m->pins_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, m->pins_ref);
    lua_pushnil(L);
    lua_rawseti(L, -2, (lua_Integer)(h - m->slots) + 1);
    lua_pop(L, 1);
}

/* One finished transfer of slot h, put into the table at index `out`: as the table
 * {slot, status, headers, body} / {slot, status, data, headers, done, decode_error} / {slot, err}
 * appended at position n (flat = 0), or flat as the six values slot, status, a, b, c, d at
 * 6 * (n - 1) + 1 (flat = 1): a, b, c, d = headers, body | data, headers, done, decode_error;
 * on a transport error status is nil and a is the error. With `owners` (a stack index, flat
 * only), the first value is owners[slot] instead of the slot, and owners[slot] is cleared. */
static void collect(lua_State *L, multi_t *m, handle_t *h, CURLcode rc, int out, int n, int flat,
                    int owners)
{
    lua_Integer slot = (lua_Integer)(h - m->slots) + 1;
    if (!flat) {
        lua_createtable(L, 0, 6);
        lua_pushinteger(L, slot);
        lua_setfield(L, -2, "slot");
        int pushed = finish(L, h, rc);
        h->op = NULL;
        release_hset(L, m, h);
        if (pushed == 5) {
            lua_setfield(L, -6, "decode_error");
            lua_setfield(L, -5, "done");
            lua_setfield(L, -4, "headers");
            lua_setfield(L, -3, "data");
            lua_setfield(L, -2, "status");
        } else if (pushed == 3) {
            lua_setfield(L, -4, "body");
            lua_setfield(L, -3, "headers");
            lua_setfield(L, -2, "status");
        } else {
            lua_setfield(L, -3, "err");
            lua_pop(L, 1);
        }
        lua_rawseti(L, out, n);
        return;
    }
    int base = 6 * (n - 1);
    int top = lua_gettop(L);
    int pushed = finish(L, h, rc);
    h->op = NULL;
    release_hset(L, m, h);
    if (owners) {
        lua_rawgeti(L, owners, slot);
        lua_rawseti(L, out, base + 1);
        lua_pushnil(L);
        lua_rawseti(L, owners, slot);
    } else {
        lua_pushinteger(L, slot);
        lua_rawseti(L, out, base + 1);
    }
    /* pushed values: status, v1..v4 (5), status, headers, body (3), or nil, err (2) */
    for (int k = 0; k < 5; k++) {
        if (k < pushed)
            lua_pushvalue(L, top + 1 + k);
        else
            lua_pushnil(L);
        lua_rawseti(L, out, base + 2 + k);
    }
    lua_settop(L, top);
}

/* Runs the multi until at least one transfer finished (or the timeout) and collects every
 * finished one into the table at `out`. Returns how many. */
static int multi_collect(lua_State *L, multi_t *m, double timeout, int out, int flat, int owners)
{
    int running = 0, n = 0;
    if (m->multi == NULL || m->busy == 0)
        return 0;
    curl_multi_perform(m->multi, &running);
    for (int round = 0;; round++) {
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            handle_t *h = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
            CURLcode rc = msg->data.result;
            curl_multi_remove_handle(m->multi, h->curl);
            h->busy = 0;
            m->busy--;
            collect(L, m, h, rc, out, ++n, flat, owners);
        }
        if (n > 0 || round > 0 || m->busy == 0)
            break;
        curl_multi_poll(m->multi, NULL, 0, (int)to_ms(timeout), NULL);
        curl_multi_perform(m->multi, &running);
    }
    return n;
}

/* m:wait([timeout_seconds]) -> array of {slot, status, headers, body} or {slot, err}; for
 * submit_call's transfers {slot, status, data, headers, done, decode_error}.
 * Returns as soon as at least one transfer finished, or after the timeout with {}. */
static int l_multi_wait(lua_State *L)
{
    multi_t *m = check_multi(L);
    double timeout = luaL_optnumber(L, 2, 1.0);
    lua_settop(L, 2);
    lua_newtable(L);
    multi_collect(L, m, timeout, 3, 0, 0);
    return 1;
}

/* m:wait_into(out [, timeout_seconds [, owners]]) -> n: m:wait's answers without a table each:
 * out[6k+1 .. 6k+6] = slot, status, a, b, c, d for k = 0 .. n-1 (see collect). With the table
 * `owners`, out[6k+1] is owners[slot] (whatever the caller filed there at submit), and that
 * entry is cleared before any answer is handed back. For crm.batch's loop. */
static int l_multi_wait_into(lua_State *L)
{
    multi_t *m = check_multi(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 3, 1.0);
    int owners = 0;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        owners = 4;
    }
    lua_settop(L, 4);
    lua_pushinteger(L, multi_collect(L, m, timeout, 2, 1, owners));
    return 1;
}

static int l_multi_busy(lua_State *L)
{
    lua_pushinteger(L, check_multi(L)->busy);
    return 1;
}

/* ---- module functions ---- */

static int l_guid(lua_State *L)
{
    uuid_t u;
    char s[37];
    uuid_generate_random(u);
    uuid_unparse_lower(u, s);
    lua_pushlstring(L, s, 36);
    return 1;
}

/* core.guid_v5(namespace, name) -> the RFC 9562 version-5 (name-based, SHA-1) UUID of `name`
 * in `namespace` (a UUID in its 36-character text form), lowercase | nil, message when the
 * namespace is not a UUID. The same namespace and name give the same UUID on any host. */
static int l_guid_v5(lua_State *L)
{
    size_t nslen, len;
    const char *ns = luaL_checklstring(L, 1, &nslen);
    const char *name = luaL_checklstring(L, 2, &len);
    uuid_t space, u;
    char s[37];
    if (nslen != 36 || strlen(ns) != 36 || uuid_parse(ns, space) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "namespace must be a UUID (8-4-4-4-12 hex digits)");
        return 2;
    }
    uuid_generate_sha1(u, space, name, len);
    uuid_unparse_lower(u, s);
    lua_pushlstring(L, s, 36);
    return 1;
}

static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* core.time() -> seconds since the epoch, with the fraction (the wall clock; crm.toast_time) */
static int l_time(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    if (!(s > 0))
        return 0;
    if (s > 86400.0)
        s = 86400.0;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

/* Percent-encodes everything but RFC 3986 unreserved characters. */
static int l_escape(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char small[256];
    char *out = n <= sizeof small / 3 ? small : lua_newuserdata(L, 3 * n);
    size_t o = crm_escape(s, n, out);
    lua_pushlstring(L, out, o);
    return 1;
}

static const luaL_Reg handle_methods[] = {
    {"request", l_request},
    {"call", l_call},
    {"close", l_handle_close},
    {"closed", l_handle_closed},
    {NULL, NULL},
};

static const luaL_Reg multi_methods[] = {
    {"submit", l_multi_submit},
    {"submit_call", l_multi_submit_call},
    {"wait", l_multi_wait},
    {"wait_into", l_multi_wait_into},
    {"busy", l_multi_busy},
    {"close", l_multi_close},
    {NULL, NULL},
};

static const luaL_Reg hset_methods[] = {
    {"close", l_hset_close},
    {NULL, NULL},
};

/* core.curl_version() -> libcurl's version text. A function, not a field: curl_version()
 * initialises every library libcurl links (libldap among them), which loading need not pay. */
static int l_curl_version(lua_State *L)
{
    lua_pushstring(L, curl_version());
    return 1;
}

static const luaL_Reg module_functions[] = {
    {"header_set", l_header_set},
    {"curl_version", l_curl_version},
    {"json_setup", crm_l_json_setup},
    {"decode", crm_l_decode},
    {"new", l_new},
    {"multi", l_multi},
    {"guid", l_guid},
    {"guid_v5", l_guid_v5},
    {"now", l_now},
    {"time", l_time},
    {"sleep", l_sleep},
    {"escape", l_escape},
    {"isatty", crm_l_isatty},
    {"file_mode", crm_l_file_mode},
    {"interrupted", crm_l_interrupted},
    {"http_head", l_http_head},
    {"url_unsafe", l_url_unsafe},
    {NULL, NULL},
};

/* A userdata class: methods, and one close function behind close(), __gc and __close, so a
 * script can free early and the collector catches the rest. */
static void register_class(lua_State *L, const char *name, const luaL_Reg *methods,
                           lua_CFunction close)
{
    if (luaL_newmetatable(L, name)) {
        lua_newtable(L);
        crm_setfuncs(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__close");
        lua_pushstring(L, name);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
}

int luaopen_crm_core(lua_State *L)
{
    register_class(L, CRM_HANDLE_MT, handle_methods, l_handle_close);
    if (luaL_newmetatable(L, CRM_HEADERS_MT)) {
        lua_pushcfunction(L, l_headers_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_headers_pairs);
        lua_setfield(L, -2, "__pairs");
    }
    lua_pop(L, 1);
    register_class(L, CRM_MULTI_MT, multi_methods, l_multi_close);
    register_class(L, CRM_HSET_MT, hset_methods, l_hset_close);
    crm_newlib(L, module_functions);
    lua_pushliteral(L, CRM_VERSION);
    lua_setfield(L, -2, "version");
    crm_ops_register(L);
    return 1;
}
