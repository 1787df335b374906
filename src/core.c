/* crm.core: the narrow C layer. A libcurl handle per client, GUIDs, a monotonic clock, sleep and
 * percent-encoding. No policy lives here: retries, auth and JSON shapes belong to the Lua layer. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <uuid/uuid.h>

#include "compat.h"
#include "wire.h"

#define CRM_VERSION "0.1.0"
#define CRM_HANDLE_MT "crm.core.handle"
#define CRM_DEFAULT_MAX_RESPONSE (16L * 1024 * 1024)

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

typedef struct {
    CURL *curl;
    struct buf body;
    struct buf head;
    size_t max_response;
    int too_large;
    long timeout_ms;
    char errbuf[CURL_ERROR_SIZE];
} handle_t;

/* ---- growable buffers, kept between requests so a client allocates once ---- */

static int buf_append(struct buf *b, const char *p, size_t n)
{
    if (n > SIZE_MAX - b->len - 1)
        return 0;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        char *d = realloc(b->data, cap);
        if (d == NULL)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 1;
}

static void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

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
    if (h->curl) {
        curl_easy_cleanup(h->curl);
        h->curl = NULL;
    }
    buf_free(&h->body);
    buf_free(&h->head);
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

/* core.new{timeout, connect_timeout, cafile, capath, insecure_skip_verify, user_agent,
 *          max_response_bytes} -> handle | nil, err */
static int l_new(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);

    handle_t *h = lua_newuserdata(L, sizeof *h);
    memset(h, 0, sizeof *h);
    luaL_getmetatable(L, CRM_HANDLE_MT);
    lua_setmetatable(L, -2);

    h->curl = curl_easy_init();
    if (h->curl == NULL)
        return push_error(L, "transport", "CURLE_FAILED_INIT", CURLE_FAILED_INIT,
                          "libcurl could not create a handle", 0);

    double max = opt_number(L, 1, "max_response_bytes", (double)CRM_DEFAULT_MAX_RESPONSE);
    h->max_response = max >= 1 && max < 1e15 ? (size_t)max : (size_t)CRM_DEFAULT_MAX_RESPONSE;
    h->timeout_ms = to_ms(opt_number(L, 1, "timeout", 30.0));
    long connect_ms = to_ms(opt_number(L, 1, "connect_timeout", 10.0));
    const char *ua = opt_string(L, 1, "user_agent");
    const char *cafile = opt_string(L, 1, "cafile");
    const char *capath = opt_string(L, 1, "capath");
    int insecure = opt_bool(L, 1, "insecure_skip_verify");

    CURL *c = h->curl;
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
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
    return 1;
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

static void push_headers(lua_State *L, const struct buf *b)
{
    lua_newtable(L);
    if (b->data)
        crm_parse_headers(b->data, b->len, add_header, L);
}

/* h:request(method, url, headers, body [, timeout_seconds]) -> status, headers, body | nil, err */
static int l_request(lua_State *L)
{
    handle_t *h = check_open(L);
    if (h == NULL)
        return push_error(L, "transport", "closed", 0, "the client is closed", 0);
    size_t mlen, ulen, blen = 0;
    const char *method = luaL_checklstring(L, 2, &mlen);
    const char *url = luaL_checklstring(L, 3, &ulen);
    const char *body = NULL;
    if (!lua_isnoneornil(L, 5))
        body = luaL_checklstring(L, 5, &blen);
    double timeout = luaL_optnumber(L, 6, 0);

    if (crm_has_ctl(url, ulen) || memchr(url, ' ', ulen))
        return push_error(L, "validation", "bad_url", 0, "url contains a control character or space", 0);
    if (crm_has_ctl(method, mlen) || mlen == 0 || mlen > 16)
        return push_error(L, "validation", "bad_method", 0, "method is not a valid HTTP method", 0);

    struct curl_slist *list = curl_slist_append(NULL, "Expect:");
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        for (int i = 1;; i++) {
            lua_rawgeti(L, 4, i);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                break;
            }
            size_t hl;
            const char *hv = lua_tolstring(L, -1, &hl);
            if (hv == NULL || crm_has_ctl(hv, hl)) {
                lua_pop(L, 1);
                curl_slist_free_all(list);
                return push_error(L, "validation", "bad_header", 0,
                                  "header contains CR, LF or NUL, or is not a string", 0);
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
    }

    CURL *c = h->curl;
    h->body.len = 0;
    h->head.len = 0;
    h->too_large = 0;
    h->errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout > 0 ? to_ms(timeout) : h->timeout_ms);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    if (mlen == 4 && memcmp(method, "HEAD", 4) == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (!(mlen == 3 && memcmp(method, "GET", 3) == 0 && !body) &&
             !(mlen == 4 && memcmp(method, "POST", 4) == 0 && body))
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);

    CURLcode rc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
    curl_slist_free_all(list);

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
    lua_pushinteger(L, status);
    push_headers(L, &h->head);
    lua_pushlstring(L, h->body.data ? h->body.data : "", h->body.len);
    return 3;
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

static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
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
    {"close", l_handle_close},
    {"closed", l_handle_closed},
    {NULL, NULL},
};

static const luaL_Reg module_functions[] = {
    {"new", l_new},
    {"guid", l_guid},
    {"now", l_now},
    {"sleep", l_sleep},
    {"escape", l_escape},
    {NULL, NULL},
};

int luaopen_crm_core(lua_State *L)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (luaL_newmetatable(L, CRM_HANDLE_MT)) {
        crm_newlib(L, handle_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_handle_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_handle_close);
        lua_setfield(L, -2, "__close");
        lua_pushliteral(L, CRM_HANDLE_MT);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    crm_newlib(L, module_functions);
    lua_pushliteral(L, CRM_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, curl_version());
    lua_setfield(L, -2, "curl_version");
    return 1;
}
