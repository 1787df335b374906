/* The one place that knows Lua 5.1/LuaJIT from Lua 5.4; the rest of the C reads as one dialect. */
#ifndef CRM_COMPAT_H
#define CRM_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 502
#define crm_setfuncs(L, l) luaL_setfuncs((L), (l), 0)
#define crm_newlib(L, l) luaL_newlib((L), (l))
#define crm_testudata(L, i, name) luaL_testudata((L), (i), (name))
#define crm_rawlen(L, i) lua_rawlen((L), (i))
#else
#define crm_rawlen(L, i) lua_objlen((L), (i))
/* Lua 5.1 ABI (LuaJIT, OpenResty): register into the table on the stack top. */
static inline void crm_setfuncs(lua_State *L, const luaL_Reg *l)
{
    for (; l->name != NULL; l++) {
        lua_pushcfunction(L, l->func);
        lua_setfield(L, -2, l->name);
    }
}

static inline void crm_newlib(lua_State *L, const luaL_Reg *l)
{
    lua_newtable(L);
    crm_setfuncs(L, l);
}

static inline void *crm_testudata(lua_State *L, int i, const char *name)
{
    void *p = lua_touserdata(L, i);
    if (p == NULL || !lua_getmetatable(L, i))
        return NULL;
    luaL_getmetatable(L, name);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}
#endif

#endif
