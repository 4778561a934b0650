export * from "./execution-environment.ts";
export * from "./lambda-events.ts";
export * from "./mysql-admin.ts";
export * from "./mysql-server.ts";
