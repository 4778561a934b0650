export * from "./bundle-handler.ts";
export * from "./execution-environment.ts";
export * from "./lambda-events.ts";
export * from "./mysql-admin.ts";
export * from "./mysql-server.ts";
export * from "./sql-file.ts";
