// The soak's plan, drawn from the seed before anything runs: which function each invocation goes to, and which
// fault (or probe) it carries. The same seed gives the same plan; only timings differ from run to run.
import type { FaultKind, FunctionName, ProbeKind } from "./directive.ts";
import type { RestartKind } from "./world.ts";

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
	["orders-api", 30],
	["ledger-writer", 16],
	["ledger-reader", 20],
	["webhook-relay", 16],
	["export-stream", 8],
	["ledger-batch", 6],
	// A step of batch-lmi is a burst of 2 to 8 invocations at once.
	["batch-lmi", 3],
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
		["early-background", 2],
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
		["early-background", 3],
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
	"export-stream": [
		["stream-db", 4],
		["stream-partner", 4],
		["early-background", 2],
		["after-throws", 1],
	],
	"ledger-batch": [
		["timeout-answers", 4],
		["early-background", 3],
		["after-throws", 2],
		["kill-query", 2],
		["malformed-event", 1],
	],
	// The faults of a burst's members (a burst itself is the fault "concurrent").
	"batch-lmi": [
		["timeout-answers", 3],
		["early-background", 3],
		["after-throws", 2],
		["malformed-event", 1],
	],
};

/** Share of invocations that carry a fault. */
export const FAULT_RATE = 0.22;
/** The soak's own functions are there for their faults: more of their invocations carry one. */
const FAULT_RATE_OF: Partial<Record<FunctionName, number>> = { "export-stream": 0.5, "ledger-batch": 0.4 };
/** batch-lmi: invocations per burst, and the share of them that carry a fault of their own. */
const BURST_MIN = 2;
const BURST_MAX = 8;
const MEMBER_FAULT_RATE = 0.25;
/** A memory probe in each function after this many of its invocations, and then every MEMORY_PROBE_EVERY. */
const MEMORY_PROBE_FIRST = 5;
const MEMORY_PROBE_EVERY = 100;

/** One invocation of a burst (batch-lmi): they all start at once, in one environment. */
export interface Member {
	fault?: FaultKind;
	seed: number;
}

export interface Step {
	/** Position in the run, from 0. */
	index: number;
	fn: FunctionName;
	fault?: FaultKind;
	probe?: ProbeKind;
	/** Seed of the step's own choices (which malformation, which account, how many records). */
	seed: number;
	/** batch-lmi: the invocations of the burst (the step's fault is "concurrent"). */
	members?: Member[];
}

/** A restart of the DB server while the functions keep being invoked. */
export interface LiveRestart {
	/** It begins when this many invocations have started. */
	at: number;
	kind: RestartKind;
}

export interface Plan {
	steps: Step[];
	/** Global step indexes before which the DB server restarts (with every environment frozen). */
	restartsBefore: number[];
	/** Restarts while invocations run. */
	liveRestarts: LiveRestart[];
}

/** Invocations a step makes: a burst's members, or one. */
export const invocationsOf = (step: Step): number => step.members?.length ?? 1;

export const makePlan = (invocations: number, seed: number): Plan => {
	const next = random(seed);
	const steps: Step[] = [];
	const countOf = new Map<FunctionName, number>();
	let planned = 0;
	const push = (fn: FunctionName, extra: Pick<Step, "fault" | "probe" | "members"> = {}) => {
		if (planned >= invocations) return;
		const step: Step = { index: steps.length, fn, ...extra, seed: Math.floor(next() * 2 ** 32) };
		steps.push(step);
		planned += invocationsOf(step);
		countOf.set(fn, (countOf.get(fn) ?? 0) + 1);
	};
	while (planned < invocations) {
		const fn = weighted(next, FUNCTION_WEIGHTS);
		const count = countOf.get(fn) ?? 0;
		if (count === MEMORY_PROBE_FIRST || (count > 0 && count % MEMORY_PROBE_EVERY === 0)) {
			push(fn, { probe: "memory" });
			continue;
		}
		if (fn === "batch-lmi" && count > 0) {
			const size = Math.min(
				invocations - planned,
				BURST_MIN + Math.floor(next() * (BURST_MAX - BURST_MIN + 1)),
			);
			const members = Array.from({ length: size }, (): Member => {
				const fault = next() < MEMBER_FAULT_RATE ? weighted(next, FAULTS_OF["batch-lmi"]) : undefined;
				return { ...(fault ? { fault } : {}), seed: Math.floor(next() * 2 ** 32) };
			});
			push(fn, { fault: "concurrent", members });
			continue;
		}
		// The first invocation of a function is its cold start: ordinary, so that faults meet a warm environment.
		const faulty = count > 0 && next() < (FAULT_RATE_OF[fn] ?? FAULT_RATE);
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
		Math.floor(steps.length * (0.1 + 0.8 * next())),
	).sort((a, b) => a - b);
	// While invocations run: one per 1,000 invocations (at least two, one of each kind), crash and graceful in turn.
	const live = invocations >= 200 ? Math.max(2, Math.round(invocations / 1000)) : 0;
	const liveRestarts = Array.from({ length: live }, () => Math.floor(invocations * (0.1 + 0.8 * next())))
		.sort((a, b) => a - b)
		.map((at, i): LiveRestart => ({ at, kind: i % 2 === 0 ? "crash" : "graceful" }));
	return { steps, restartsBefore, liveRestarts };
};
