// @middy-conn/lifecycle: the invocation lifecycle shared by @middy-conn's middlewares (and yours): resources
// closed on every path Middy can take, background tasks awaited before any of them, timeouts acted on at once.
export type { BackgroundTask, BackgroundTaskCounts, WaitUntil } from "./background-tasks.ts";
export { remainingTimeInMillis, type Settled, settleWithin } from "./deadline.ts";
export * from "./errors.ts";
export {
	type EndKind,
	Invocation,
	type InvocationEnd,
	type InvocationOptions,
	type InvocationPhase,
	type InvocationResource,
	type ResourceHandle,
} from "./invocation.ts";
export { type LifecycleErrorCode, lifecycleError, lifecycleErrorCodes } from "./lifecycle-errors.ts";
export * from "./logger.ts";
export { isMiddyTimeout } from "./middy-request.ts";
export * from "./option-rules.ts";
export * from "./options-key.ts";
