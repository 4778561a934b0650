// Limits that the options of both middlewares obey.
import { executionContextKeys, lambdaContextKeys } from "@middy/util";

/**
 * The longest delay a Node timer takes (2^31 - 1 ms). Drivers hand their timeouts to setTimeout, which fires after
 * 1 ms instead beyond it: a timeout of 1e10 would time every connect or request out at once.
 */
export const maxTimerMs = 2_147_483_647;

/**
 * Context keys a middleware must not take for its `contextKey`: the Lambda context's own (overwriting one would
 * break the runtime or Middy), and `waitUntil`, which both middlewares put there.
 */
export const reservedContextKeys: readonly string[] = [
	...lambdaContextKeys,
	...executionContextKeys,
	"getRemainingTimeInMillis",
	"done",
	"fail",
	"succeed",
	"lambdaContext",
	"waitUntil",
	"__proto__",
	"constructor",
];

/** The background tasks' limits (`context.waitUntil`), the same for every middleware that offers them. */
export const waitUntilDefaults = {
	/** Leave this much (ms) of Lambda's remaining time for the rest of the invocation's teardown. */
	waitUntilReserve: 500,
	/** At most this long (ms) for the background tasks, however much time is left. */
	waitUntilTimeout: 10_000,
} as const;
