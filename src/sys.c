/* crm.core's POSIX helpers for bin/crm: isatty, a file's permission bits, a Ctrl-C counter. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compat.h"
#include "sys.h"

int crm_l_isatty(lua_State *L)
{
    lua_Integer fd = luaL_checkinteger(L, 1);
    lua_pushboolean(L, fd >= 0 && fd <= 1024 && isatty((int)fd) == 1);
    return 1;
}

int crm_l_file_mode(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    if (S_ISREG(st.st_mode))
        lua_pushliteral(L, "file");
    else if (S_ISDIR(st.st_mode))
        lua_pushliteral(L, "directory");
    else
        lua_pushliteral(L, "other");
    lua_pushinteger(L, (lua_Integer)st.st_uid);
    lua_pushinteger(L, (lua_Integer)geteuid());
    return 4;
}

static volatile sig_atomic_t sigint_count = 0;

/* Only async-signal-safe calls: the first Ctrl-C is counted for the Lua loop to notice between
 * items (so what was read is flushed and a checkpoint written); the second one quits now. */
static void on_sigint(int sig)
{
    (void)sig;
    if (sigint_count > 0)
        _exit(130);
    sigint_count = 1;
}

int crm_l_interrupted(lua_State *L)
{
    const char *what = luaL_optstring(L, 1, NULL);
    if (what != NULL && strcmp(what, "trap") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        sigint_count = 0;
        if (sigaction(SIGINT, &sa, NULL) != 0) {
            lua_pushnil(L);
            lua_pushstring(L, strerror(errno));
            return 2;
        }
        lua_pushboolean(L, 1);
        return 1;
    }
    if (what != NULL)
        return luaL_argerror(L, 1, "expected \"trap\" or nothing");
    lua_pushinteger(L, (lua_Integer)sigint_count);
    return 1;
}
