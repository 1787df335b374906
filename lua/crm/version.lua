-- The one place crm's version is written. The Makefile reads it (the C core's CRM_VERSION and
-- so the curl User-Agent, make dist), crm.platform returns it (crm._VERSION, the ngx transport's
-- User-Agent) and make version-check holds rockspec/crm-<version>-1.rockspec to it.
-- Keep the line below in this exact form: `return "MAJOR.MINOR.PATCH"`.
return "0.2.0"
