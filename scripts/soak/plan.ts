// The soak's plan, drawn from the seed before anything runs: which function each invocation goes to, and which
// fault (or probe) it carries. The same seed gives the same plan; only timings differ from run to run.
import type { FaultKind, FunctionName, ProbeKind } from "./directive.ts";

/** mulberry32: small, fast, and good enough to spread faults; a number in [0, 1) per call. */
export const random = (seed: number): (() => number) => {
	let state = seed >>> 0;
	return () => {
		state = (state + 0x6d2b79f5) >>> 0;
		let t = state;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
};

/** Picks one of `items` with probability proportional to its weight. */
export const weighted = <T>(next: () => number, items: ReadonlyArray<readonly [T, number]>): T => {
	const total = items.reduce((sum, [, weight]) => sum + weight, 0);
	let left = next() * total;
	for (const [item, weight] of items) {
		left -= weight;
		if (left < 0) return item;
	}
	return (items[items.length - 1] as readonly [T, number])[0];
};

/** How often each function is invoked. */
const FUNCTION_WEIGHTS: ReadonlyArray<readonly [FunctionName, number]> = [
	["orders-api", 35],
	["ledger-writer", 20],
	["ledger-reader", 25],
	["webhook-relay", 20],
];

/**
 * The faults each function can meet, and how often. The ones that cost seconds of the run's time (a timeout that
 * must elapse, a freeze longer than the keep-alive) are rarer.
 */
export const FAULTS_OF: Record<FunctionName, ReadonlyArray<readonly [FaultKind, number]>> = {
	"orders-api": [
		["handler-throws", 3],
		["after-throws", 3],
		["early-response", 3],
		["timeout-query", 2],
		["timeout-http", 2],
		["kill-query", 3],
		["partner-reset", 3],
		["partner-close-idle", 2],
		["partner-slow-body", 2],
		["long-freeze", 2],
		["malformed-event", 3],
	],
	"ledger-writer": [
		["after-throws", 3],
		["early-response", 3],
		["timeout-query", 2],
		["kill-query", 3],
		["malformed-event", 3],
	],
	"ledger-reader": [
		["handler-throws", 3],
		["after-throws", 3],
		["early-response", 3],
		["timeout-query", 2],
		["kill-query", 3],
		["malformed-event", 3],
	],
	"webhook-relay": [
		["after-throws", 3],
		["early-response", 3],
		["timeout-http", 1],
		["partner-reset", 3],
		["partner-close-idle", 2],
		["partner-slow-body", 2],
		["long-freeze", 2],
		["malformed-event", 3],
	],
};

/** Share of invocations that carry a fault. */
export const FAULT_RATE = 0.22;
/** A memory probe in each function after this many of its invocations, and then every MEMORY_PROBE_EVERY. */
const MEMORY_PROBE_FIRST = 5;
const MEMORY_PROBE_EVERY = 100;

export interface Step {
	/** Position in the run, from 0. */
	index: number;
	fn: FunctionName;
	fault?: FaultKind;
	probe?: ProbeKind;
	/** Seed of the step's own choices (which malformation, which account, how many records). */
	seed: number;
}

export interface Plan {
	steps: Step[];
	/** Global step indexes before which the DB server restarts (with every environment frozen). */
	restartsBefore: number[];
}

export const makePlan = (invocations: number, seed: number): Plan => {
	const next = random(seed);
	const steps: Step[] = [];
	const countOf = new Map<FunctionName, number>();
	const push = (fn: FunctionName, extra: Pick<Step, "fault" | "probe"> = {}) => {
		if (steps.length >= invocations) return;
		steps.push({ index: steps.length, fn, ...extra, seed: Math.floor(next() * 2 ** 32) });
		countOf.set(fn, (countOf.get(fn) ?? 0) + 1);
	};
	while (steps.length < invocations) {
		const fn = weighted(next, FUNCTION_WEIGHTS);
		const count = countOf.get(fn) ?? 0;
		if (count === MEMORY_PROBE_FIRST || (count > 0 && count % MEMORY_PROBE_EVERY === 0)) {
			push(fn, { probe: "memory" });
			continue;
		}
		// The first invocation of a function is its cold start: ordinary, so that faults meet a warm environment.
		const faulty = count > 0 && next() < FAULT_RATE;
		if (!faulty) {
			push(fn);
			continue;
		}
		const fault = weighted(next, FAULTS_OF[fn]);
		push(fn, { fault });
		// The pooled reader's next invocation looks at what its connection carries after the fault.
		if (fn === "ledger-reader") push(fn, { probe: "state" });
	}
	const restarts = invocations >= 200 ? Math.max(1, Math.round(invocations / 2000)) : 0;
	const restartsBefore = Array.from({ length: restarts }, () =>
		Math.floor(invocations * (0.1 + 0.8 * next())),
	).sort((a, b) => a - b);
	return { steps, restartsBefore };
};
