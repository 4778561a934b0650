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

/** The candidate nearest to `name` (a typo's likely meaning), when one is close enough to suggest. */
export const closestName = (name: string, candidates: Iterable<string>): string | undefined => {
	const lower = name.toLowerCase();
	let best: string | undefined;
	let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
	for (const candidate of candidates) {
		const distance = editDistance(lower, candidate.toLowerCase());
		if (distance < bestDistance) {
			best = candidate;
			bestDistance = distance;
		}
	}
	return best;
};

// Levenshtein distance, for suggestions: options are short, so the quadratic table is nothing.
const editDistance = (a: string, b: string): number => {
	let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
	for (let i = 1; i <= a.length; i += 1) {
		const current = [i];
		for (let j = 1; j <= b.length; j += 1) {
			const substitution = (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1);
			current[j] = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, substitution);
		}
		previous = current;
	}
	return previous[b.length] as number;
};
