/* The ngx transport's (lua/crm/transport/ngx.lua) usual answer head, parsed in C without any I/O:
 * the cosocket reads, this reads the bytes it got. It takes only the plain case and declines the
 * rest, which the transport's Lua reader then parses line by line, so both give the same headers
 * for every head this one takes (spec/transport_ngx_head_spec.lua checks it). */
#ifndef CRM_HTTP1_H
#define CRM_HTTP1_H

#include <stddef.h>

#define CRM_HTTP1_NAME_MAX 256

/* Called once per header line: name lower-cased (ASCII), value without the spaces and tabs
 * around it. */
typedef void (*crm_http1_header_fn)(void *ud, const char *name, size_t name_len,
                                    const char *value, size_t value_len);

typedef struct {
    int minor;    /* HTTP/1.<minor> */
    int status;   /* three digits, 200 or more, not 101 */
    size_t body;  /* offset of the first byte after the head's blank line */
    long long length; /* Content-Length when one line gives it as 1 to 15 digits; -1 when no line
                         does; -2 otherwise (repeated, empty, not digits: the Lua reader judges) */
} crm_http1_head;

/* Parses the head at the start of data[0..n): a status line "HTTP/1.<d> <ddd>[ reason]", header
 * lines, a blank line, every line ending in CRLF. Returns 1 and fills *out (fn called for every
 * header line, in order) when the head is whole and plain; 0 when it is not (nothing is known
 * about it then, fn may have been called): a line ending in a bare LF, a CR inside a line, a
 * control character other than tab, a folded line (starting with a space or a tab), a name
 * longer than CRM_HTTP1_NAME_MAX, a 1xx or 101 status, header lines of more than `limit` bytes
 * (with their CRLFs and the blank line), or no blank line yet. Lines without a colon, or whose
 * name is empty or holds a space or a tab, are skipped, as the Lua reader skips them. */
int crm_http1_parse_head(const char *data, size_t n, size_t limit, crm_http1_header_fn fn,
                         void *ud, crm_http1_head *out);

/* 1 when s[0..n) has a control character (0-31, 127) or a space: not in a URL. */
int crm_http1_url_unsafe(const char *s, size_t n);

#endif
