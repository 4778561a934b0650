export * from "./mysql-admin.ts";
export * from "./mysql-server.ts";
