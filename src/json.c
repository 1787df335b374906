/* crm.core's answer decoding: the glue between Lua and the decoder (src/jdec.c). crm.json hands
 * over its array_mt once (core.json_setup); every decode fetches it from the registry once. */
#include "json.h"
#include "jdec.h"

/* Registry key: the address of this static. */
static char key_array_mt;

void crm_push_array_mt(lua_State *L)
{
    lua_pushlightuserdata(L, &key_array_mt);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

int crm_l_json_setup(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!crm_jdec_init())
        return luaL_error(L, "crm.core: no C locale for reading numbers");
    lua_pushlightuserdata(L, &key_array_mt);
    lua_pushvalue(L, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

int crm_decode_push_at(lua_State *L, const char *s, size_t n, int keep_nulls, size_t *pos)
{
    int base = lua_gettop(L);
    if (!lua_checkstack(L, 4))
        return luaL_error(L, "crm.core: no Lua stack left to decode");
    crm_push_array_mt(L);
    if (!lua_istable(L, base + 1))
        return luaL_error(L, "crm.core: decode before crm.json set it up");
    crm_jdec_err err;
    if (crm_jdec(L, s, n, keep_nulls, base + 1, &err)) {
        lua_replace(L, base + 1);
        return 1;
    }
    lua_settop(L, base);
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    if (pos)
        *pos = err.pos;
    return 2;
}

int crm_decode_push(lua_State *L, const char *s, size_t n, int keep_nulls)
{
    return crm_decode_push_at(L, s, n, keep_nulls, NULL);
}

int crm_l_decode(lua_State *L)
{
    size_t n;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    int keep = lua_toboolean(L, 2);
    if (s == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, CRM_NOT_JSON);
        return 2;
    }
    lua_settop(L, 2);
    size_t pos = 0;
    if (crm_decode_push_at(L, s, n, keep, &pos) == 1)
        return 1;
    lua_pushinteger(L, (lua_Integer)pos);
    return 3;
}
