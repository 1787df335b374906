/* Answer decoding for crm.core: lua-cjson's decoder, then one C walk that marks arrays, drops
 * nulls in objects and refuses numbers beyond a double. */
#ifndef CRM_JSON_H
#define CRM_JSON_H

#include <stddef.h>
#include "compat.h"

/* The messages crm.http reports (lua/crm/json.lua uses the same ones). */
#define CRM_NOT_JSON "response body is not valid JSON"
#define CRM_OUT_OF_RANGE "response body has a number out of range"

/* core.json_setup(decode_function, array_mt, null): crm.json hands over its cjson codec. */
int crm_l_json_setup(lua_State *L);
/* Pushes crm.json's array_mt (nil before json_setup). */
void crm_push_array_mt(lua_State *L);
/* core.decode(text [, keep_nulls]) -> value | nil, message */
int crm_l_decode(lua_State *L);
/* Pushes the decoded value and returns 1, or pushes nil and the message and returns 2. */
int crm_decode_push(lua_State *L, const char *s, size_t n, int keep_nulls);

#endif
