// The goals of issues 3, 4 and 6, each a ratio of two contenders measured in the same comparison of the same
// run (or, for memory, a slope). Evaluated here and nowhere else; the report only prints them.
import { NAMES as COLD } from "./cold-start.ts";
import { NAMES as DB } from "./db.ts";
import { NAMES as HTTP } from "./http.ts";
import { BASELINE, type MemoryResult } from "./memory.ts";
import { NAMES as OVERHEAD } from "./overhead.ts";
import { type ComparisonResult, roundRatioIqr } from "./runner.ts";

type Operator = "<=" | ">=" | "<";

interface RatioGoal {
	label: string;
	comparison: string;
	numerator: string;
	denominator: string;
	operator: Operator;
	threshold: number;
	/** Only reported, not one of the goals (shown without ✅/❌ weight in the summary). */
	informative?: boolean;
}

export interface GoalOutcome {
	label: string;
	goal: string;
	/** The measured figure, formatted. */
	measured: string;
	/** Round-to-round spread of the same ratio (25th–75th percentile), formatted; empty when not a ratio. */
	spread: string;
	/** undefined: could not be measured in this run (a contender is missing). */
	met: boolean | undefined;
	informative: boolean;
}

const RATIO_GOALS: RatioGoal[] = [
	{
		label: "httpPool / bare undici Pool (small JSON)",
		comparison: "http-small",
		numerator: HTTP.httpPool,
		denominator: HTTP.barePool,
		operator: "<=",
		threshold: 1.03,
	},
	{
		label: "httpPool / bare undici Pool (64 KiB)",
		comparison: "http-large",
		numerator: HTTP.httpPool,
		denominator: HTTP.barePool,
		operator: "<=",
		threshold: 1.03,
	},
	{
		label: "new client per invocation / httpPool (small JSON)",
		comparison: "http-small",
		numerator: HTTP.newClient,
		denominator: HTTP.httpPool,
		operator: ">=",
		threshold: 10,
	},
	{
		label: "httpPool / fetch (small JSON)",
		comparison: "http-small",
		numerator: HTTP.httpPool,
		denominator: HTTP.fetch,
		operator: "<",
		threshold: 1,
	},
	{
		label: "httpPool / fetch (64 KiB)",
		comparison: "http-large",
		numerator: HTTP.httpPool,
		denominator: HTTP.fetch,
		operator: "<",
		threshold: 1,
	},
	{
		label: "scoped / raw connect",
		comparison: "db-connect",
		numerator: DB.scoped,
		denominator: DB.rawConnect,
		operator: "<=",
		threshold: 1.1,
	},
	{
		label: "scoped / raw connect awaiting the close (what the contract requires)",
		comparison: "db-connect",
		numerator: DB.scoped,
		denominator: DB.rawConnectClosed,
		operator: "<=",
		threshold: 1.1,
		informative: true,
	},
	{
		label: "scoped, cancelOnTimeout: false / raw connect",
		comparison: "db-connect",
		numerator: DB.scopedNoCancel,
		denominator: DB.rawConnect,
		operator: "<=",
		threshold: 1.1,
		informative: true,
	},
	{
		label: "pool mode / raw pool",
		comparison: "db-warm",
		numerator: DB.pool,
		denominator: DB.rawPool,
		operator: "<=",
		threshold: 1.15,
	},
	{
		label: "pool mode / raw pool + reset() (the round trip isolation needs)",
		comparison: "db-warm",
		numerator: DB.pool,
		denominator: DB.rawPoolReset,
		operator: "<=",
		threshold: 1.1,
		informative: true,
	},
	{
		label: "pool mode / serverless-mysql",
		comparison: "db-warm",
		numerator: DB.pool,
		denominator: DB.serverlessMysql,
		operator: "<=",
		threshold: 0.5,
	},
	{
		label: "middy + both (untouched) / middy, each in its own process",
		comparison: "overhead",
		numerator: OVERHEAD.both,
		denominator: OVERHEAD.middy,
		operator: "<=",
		threshold: 2,
	},
	{
		label: "middy + both (untouched) / middy: the stretch goal",
		comparison: "overhead",
		numerator: OVERHEAD.both,
		denominator: OVERHEAD.middy,
		operator: "<=",
		threshold: 1.5,
		informative: true,
	},
	{
		label: "middy + both (untouched) / middy + 2 no-op middlewares",
		comparison: "overhead",
		numerator: OVERHEAD.both,
		denominator: OVERHEAD.noop,
		operator: "<=",
		threshold: 1.5,
		informative: true,
	},
	{
		label: "httpPool + 10 waitUntil / 10 POSTs awaited by hand",
		comparison: "http-background",
		numerator: HTTP.backgroundHttpPool,
		denominator: HTTP.backgroundAwaited,
		operator: "<=",
		threshold: 1.1,
		informative: true,
	},
	{
		label: "cold start: middy + both middlewares bundle / undici + mysql2 bundle",
		comparison: "cold-start",
		numerator: COLD.minimal,
		denominator: COLD.bare,
		operator: "<=",
		threshold: 1.25,
		informative: true,
	},
];

/**
 * "About 0": a leak keeps at least one small object per invocation (a closure, a listener, a promise: 50 to
 * 200 bytes). Below 32 bytes per invocation over 10,000 invocations (320 KB) is noise after a full GC. Judged
 * on the heap after GC, once warm, above the same work without the middlewares (RSS follows V8's reserved heap,
 * which grows with the allocation rate, not with what is retained).
 */
export const MEMORY_BYTES_PER_INVOCATION = 32;

const holds = (value: number, operator: Operator, threshold: number) =>
	operator === "<=" ? value <= threshold : operator === ">=" ? value >= threshold : value < threshold;

const operatorText: Record<Operator, string> = { "<=": "≤", ">=": "≥", "<": "<" };

export const evaluateGoals = (
	comparisons: readonly ComparisonResult[],
	memory: MemoryResult | undefined,
): GoalOutcome[] => {
	const outcomes: GoalOutcome[] = RATIO_GOALS.map((goal) => {
		const comparison = comparisons.find((candidate) => candidate.id === goal.comparison);
		const numerator = comparison?.contenders.find((contender) => contender.name === goal.numerator);
		const denominator = comparison?.contenders.find((contender) => contender.name === goal.denominator);
		const base = {
			label: goal.label,
			goal: `${operatorText[goal.operator]} ${goal.threshold < 10 ? goal.threshold.toFixed(2) : goal.threshold}`,
			informative: goal.informative ?? false,
		};
		if (!numerator || !denominator) return { ...base, measured: "not measured", spread: "", met: undefined };
		const ratio = numerator.stats.median / denominator.stats.median;
		const [low, high] = roundRatioIqr(numerator.roundMedians, denominator.roundMedians);
		return {
			...base,
			measured: ratio.toFixed(ratio >= 10 ? 1 : 3),
			spread: `${low.toFixed(high >= 10 ? 1 : 3)}–${high.toFixed(high >= 10 ? 1 : 3)}`,
			met: holds(ratio, goal.operator, goal.threshold),
		};
	});
	const memoryGoals = (memory?.variants ?? []).filter((variant) => BASELINE[variant.variant]);
	if (memoryGoals.length === 0) {
		outcomes.push({
			label: "memory growth per invocation (heap after GC)",
			goal: `≈ 0 (< ${MEMORY_BYTES_PER_INVOCATION} B)`,
			measured: "not measured",
			spread: "",
			met: undefined,
			informative: false,
		});
	}
	for (const variant of memoryGoals) {
		const baseline = memory?.variants.find((candidate) => candidate.variant === BASELINE[variant.variant]);
		// Growth of its own: the heap's slope once warm, above the slope of the same work without the middlewares
		// (driver and runtime caches grow by themselves).
		const own = variant.heapSlopeWarm - (baseline?.heapSlopeWarm ?? 0);
		outcomes.push({
			label: `memory growth per invocation, ${variant.name}`,
			goal: `≈ 0 (< ${MEMORY_BYTES_PER_INVOCATION} B)`,
			measured: `${variant.heapSlopeWarm.toFixed(1)} B heap once warm (baseline ${baseline ? baseline.heapSlopeWarm.toFixed(1) : "–"} B)`,
			spread: `${memory?.early}→${memory?.total.toLocaleString("en")}: ${variant.heapPerInvocation.toFixed(1)} B`,
			met: own < MEMORY_BYTES_PER_INVOCATION,
			informative: false,
		});
	}
	return outcomes;
};
