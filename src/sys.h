/* crm.core's small POSIX helpers for the command line (bin/crm): a terminal test, a file's mode
 * bits and a Ctrl-C flag. Debian has no lua-posix for Lua 5.4, and these need only libc. */
#ifndef CRM_SYS_H
#define CRM_SYS_H

#include <lua.h>

/* isatty(fd) -> boolean */
int crm_l_isatty(lua_State *L);
/* file_mode(path) -> permission bits (st_mode & 07777), "file"|"directory"|"other", owner uid,
 *                    the process's effective uid
 *                  | nil, message */
int crm_l_file_mode(lua_State *L);
/* interrupted("trap") installs a SIGINT handler that only counts; interrupted() -> the count since
 * the trap. A second Ctrl-C ends the process at once with status 130. */
int crm_l_interrupted(lua_State *L);

#endif
