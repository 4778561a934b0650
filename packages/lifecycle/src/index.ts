export * from "./errors.ts";
export * from "./invocation-scope.ts";
export * from "./logger.ts";
export * from "./option-rules.ts";
export * from "./options-key.ts";
