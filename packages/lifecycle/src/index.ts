// @middy-conn/lifecycle: one Lambda invocation's lifecycle as Middy middlewares see it, shared by @middy-conn's
// middlewares (and yours): resources registered per invocation and closed on every path Middy can take,
// background tasks (`context.waitUntil`) awaited before any of them, timeouts acted on at once, and the errors
// that say what happened; and the helpers a middleware of your own needs with it (a bounded wait, a logger that
// never throws, the key of a module-level pool).
//
// What the packages of middy-conn share beyond that (option rules, stats, redaction, TLS checks) is in
// `@middy-conn/lifecycle/internal`: for those packages only, with no promise of stability.
export type { BackgroundTask, BackgroundTaskCounts, WaitUntil } from "./background-tasks.ts";
export { remainingTimeInMillis, type Settled, settleWithin } from "./deadline.ts";
export { MiddyConnError, type MiddyConnErrorOptions } from "./errors.ts";
export {
	type EndKind,
	Invocation,
	type InvocationEnd,
	type InvocationOptions,
	type InvocationPhase,
	type InvocationResource,
	type ResourceHandle,
} from "./invocation.ts";
export { type LifecycleErrorCode, lifecycleErrorCodes } from "./lifecycle-errors.ts";
export { type Logger, type LoggerOption, safeLogger } from "./logger.ts";
export { isMiddyTimeout } from "./middy-request.ts";
export { waitUntilDefaults } from "./option-rules.ts";
export { optionsKey } from "./options-key.ts";
