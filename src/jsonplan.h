/* The structure of a JSON text, read once without decoding it: where its arrays, objects and
 * null members are. lua-cjson 2.1.0 decodes [] and {} to the same empty table and keeps null
 * members as a light userdata; with this plan, src/json.c finds exactly the tables to mark as
 * arrays and the members to drop, by key and index, without walking every field. Pure C, no
 * Lua: fuzzed by src/fuzz/. */
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

#endif
