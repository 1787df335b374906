/* The fuzzers' reference for JSON structure (not part of the C core since src/jdec.c decodes
 * answers in one pass). It was crm's two-pass decoding: lua-cjson 2.1.0 decodes [] and {} to
 * the same empty table, and this plan (where the arrays, objects and null members of a text
 * are) or the scan and rewrite below told them apart. fuzz_wire.c checks it against itself;
 * fuzz_jdec.c uses its plan to check the decoder's array marks. Pure C, no Lua. */
#ifndef CRM_JSONPLAN_H
#define CRM_JSONPLAN_H

#include <stddef.h>
#include <stdint.h>

enum { CRM_PLAN_ARRAY = 'a', CRM_PLAN_OBJECT = 'o', CRM_PLAN_NULL = 'n' };

typedef struct {
    uint32_t key_off;  /* the member's key (parent an object): offset in the text */
    uint32_t key_len;  /* and length, quotes excluded */
    uint32_t index;    /* the element's 1-based index (parent an array) */
    uint32_t end;      /* the first event after this one's subtree */
    uint32_t count;    /* arrays: how many elements */
    uint8_t kind;      /* CRM_PLAN_* */
    uint8_t in_object; /* the parent is an object (else an array, or the top) */
} crm_plan_event;

typedef struct {
    crm_plan_event *ev; /* in document order (pre-order) */
    size_t n;           /* events used */
    size_t cap;
    int simple;   /* 1 when the plan can be followed: no escaped key, no long number, nesting
                   * within bounds, the text's brackets balanced */
    int long_num; /* a number that may not fit a double (1e400, 400 digits) */
    crm_plan_event small[64]; /* the first events, so most answers allocate nothing */
} crm_plan;

/* Reads s[0..n) into *p. Returns 0, or -1 when out of memory (p is then not simple). */
int crm_plan_scan(const char *s, size_t n, crm_plan *p);

/* 1 when s[0..n) is, conservatively, an object with no nested container, no null and no number
 * beyond a double: lua-cjson's table for it needs no marking at all. */
int crm_plan_flat(const char *s, size_t n);

/* Index just past the JSON string that opens at s[i] ('"'), or n when it never closes; with
 * `escaped`, whether it holds a backslash. */
size_t crm_json_skip_string(const char *s, size_t n, size_t i, int *escaped);

/* s[i] is 'e' or 'E' outside a string: the index past it and, when it is an exponent (after a
 * digit or a point), past its sign and digits; *long_num is set when it has 3 digits or more. */
size_t crm_json_exponent(const char *s, size_t n, size_t i, int *long_num);

/* Frees what crm_plan_scan allocated. */
void crm_plan_free(crm_plan *p);

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

#endif
