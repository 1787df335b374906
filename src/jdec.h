/* crm's JSON decoder: one pass from an answer's bytes to the Lua value crm.json documents.
 * Tables are built as the text is read (each at its size, once its members are read); there is
 * no recursion on the C stack (the open containers live in a bounded array), so a deep text is
 * an error, never a crash.
 *   - every array gets array_mt (the empty ones too); objects get no metatable;
 *   - object members that are null are dropped unless keep_nulls (a repeated key still wins:
 *     {"a":1,"a":null} gives {}); null in arrays is the light userdata NULL (cjson.null);
 *   - a number without fraction or exponent that fits a 64-bit integer is a Lua integer under
 *     Lua 5.3+ ("-0" stays the float -0.0); every other number, and every number under
 *     LuaJIT, is the nearest double; one beyond a double (1e400) is CRM_JDEC_RANGE once the
 *     whole text has been read as JSON (a text that is not JSON is CRM_JDEC_INVALID first);
 *   - numbers, strings and escapes are read as lua-cjson 2.1.0 reads them with
 *     decode_invalid_numbers(false): no NaN, Infinity, hex, leading '+' or leading zeros
 *     ("1." and "-.5" pass, as there), \u escapes with surrogate pairs checked, other bytes of
 *     a string kept as they are (no UTF-8 check);
 *   - white space, then nothing: any other byte after the value (a NUL too) is an error. */
#ifndef CRM_JDEC_H
#define CRM_JDEC_H

#include <stddef.h>
#include "compat.h"

/* Nesting beyond this many arrays and objects is an error (lua-cjson's limit). */
#define CRM_JDEC_MAX_DEPTH 1000

/* The two messages (crm.http reports them; lua/crm/json.lua knows them too). */
#define CRM_JDEC_INVALID "response body is not valid JSON"
#define CRM_JDEC_RANGE "response body has a number out of range"

typedef struct {
    const char *msg; /* CRM_JDEC_INVALID or CRM_JDEC_RANGE */
    size_t pos;      /* 1-based offset of the byte at fault; n + 1 when the text ends early */
} crm_jdec_err;

/* Decodes s[0..n); s[n] must be readable and NUL (Lua strings and struct buf keep one).
 * mt is the (absolute) stack index of array_mt. Pushes the value and returns 1; or pushes
 * nothing, fills *err and returns 0. May raise only Lua's memory error. */
int crm_jdec(lua_State *L, const char *s, size_t n, int keep_nulls, int mt, crm_jdec_err *err);

/* Prepares what crm_jdec needs once (the C locale for strtod); 0 when that failed. */
int crm_jdec_init(void);

#endif
