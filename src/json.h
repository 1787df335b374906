/* Answer decoding for crm.core: crm's own decoder (src/jdec.c) with crm.json's array_mt. */
#ifndef CRM_JSON_H
#define CRM_JSON_H

#include <stddef.h>
#include "compat.h"
#include "jdec.h"

/* The messages crm.http reports (lua/crm/json.lua uses the same ones). */
#define CRM_NOT_JSON CRM_JDEC_INVALID
#define CRM_OUT_OF_RANGE CRM_JDEC_RANGE

/* core.json_setup(array_mt): crm.json hands over the metatable of decoded arrays. */
int crm_l_json_setup(lua_State *L);
/* Pushes crm.json's array_mt (nil before json_setup). */
void crm_push_array_mt(lua_State *L);
/* core.decode(text [, keep_nulls]) -> value | nil, message, position */
int crm_l_decode(lua_State *L);
/* Pushes the decoded value and returns 1, or pushes nil and the message and returns 2 (with
 * the 1-based byte offset at fault in *pos, when pos is not NULL). s[n] must be a NUL. */
int crm_decode_push_at(lua_State *L, const char *s, size_t n, int keep_nulls, size_t *pos);
int crm_decode_push(lua_State *L, const char *s, size_t n, int keep_nulls);

#endif
