/* Pure functions over bytes from the network or the caller: header blocks, percent-encoding,
 * control-character checks. No Lua, no libcurl, so the fuzzer can drive them directly. */
#ifndef CRM_WIRE_H
#define CRM_WIRE_H

#include <stddef.h>

#define CRM_HEADER_NAME_MAX 127

/* Called once per "Name: value" line; name is lower-cased, value trimmed. */
typedef void (*crm_header_fn)(void *ud, const char *name, size_t name_len, const char *value,
                              size_t value_len);

/* Walks a raw header block (status line and CRLF or LF separated lines). Lines without a colon,
 * status lines and names longer than CRM_HEADER_NAME_MAX are skipped. Returns the count passed
 * to fn. */
size_t crm_parse_headers(const char *data, size_t len, crm_header_fn fn, void *ud);

/* Writes the percent-encoding of s (RFC 3986 unreserved characters kept) into out, which must
 * hold 3 * n bytes. Returns the bytes written. */
size_t crm_escape(const char *s, size_t n, char *out);

/* 1 when s contains CR, LF or NUL. */
int crm_has_ctl(const char *s, size_t n);
/* 1 when s[0..n) has a byte >= 0x80 (header values must be ASCII). */
int crm_has_non_ascii(const char *s, size_t n);

#endif

/* 1 when s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF). */
int crm_is_utf8(const char *s, size_t n);

/* 1 when s[0..n) is an id crm puts into a TableCheck path (validate.id's rule): 1 to 128 bytes
 * of UTF-8, no '/', '?', '#', '%', '\\', "..", white space or control characters, not ".". */
int crm_is_path_id(const char *s, size_t n);
