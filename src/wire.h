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
/* 1 when s[0..n) has a digit followed by an exponent of 3 or more digits (1e400, 2E+308): a
 * number that may not fit a double. Text that only looks like one (inside a string) gives 1
 * too; the caller then checks the decoded value. */
int crm_has_long_exponent(const char *s, size_t n);

#endif

/* ---- JSON answers: what lua-cjson cannot tell us ----
 * lua-cjson 2.1.0 decodes [] and {} to the same empty table. The scan reads the text once,
 * outside strings, and says which rewrite lets the decoded value show every array:
 *   CRM_JSON_PLAIN  no empty array: decode the text as it is, then mark every table with [1];
 *   CRM_JSON_FILL   every empty array is written [true] (no array of the text starts with true,
 *                   so a one-element [true] after decoding is always a placeholder);
 *   CRM_JSON_TAG    some array starts with true: every array gets a first element (false, or
 *                   true for an empty one) that the walk drops again. */
enum { CRM_JSON_PLAIN = 0, CRM_JSON_FILL = 1, CRM_JSON_TAG = 2 };

typedef struct {
    int mode;         /* CRM_JSON_* */
    size_t arrays;    /* '[' outside strings */
    size_t empties;   /* of those, empty ones */
    int has_null;     /* `null` outside strings */
    int long_exp;     /* a number that may not fit a double: a 3-digit exponent (1e400, 1.e400) or 200 digits */
} crm_json_info;

/* Fills *info for s[0..n). Malformed text (an unclosed string) is scanned as far as it goes;
 * the decoder then reports it. */
void crm_json_scan(const char *s, size_t n, crm_json_info *info);

/* The bytes crm_json_rewrite writes at most for s of n bytes with *info. */
size_t crm_json_rewrite_size(size_t n, const crm_json_info *info);

/* Writes s rewritten for info->mode into out (crm_json_rewrite_size bytes); returns the length. */
size_t crm_json_rewrite(const char *s, size_t n, const crm_json_info *info, char *out);

/* 1 when s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF). */
int crm_is_utf8(const char *s, size_t n);

/* 1 when s[0..n) is an id crm puts into a TableCheck path (validate.id's rule): 1 to 128 bytes
 * of UTF-8, no '/', '?', '#', '%', '\\', "..", white space or control characters, not ".". */
int crm_is_path_id(const char *s, size_t n);
