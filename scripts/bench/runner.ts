// Interleaved rounds: within one comparison every contender runs a batch in each round, in a rotated order,
// in this one process. Thermal drift, a noisy neighbour or a GC-heavy moment then hits all contenders alike,
// and the ratios between them stay meaningful even when the absolute figures move.
import { performance } from "node:perf_hooks";

export interface Contender {
	name: string;
	/** One line for the report: what this contender does per invocation. */
	note?: string;
	/** One invocation. Throws on a wrong answer, so a broken contender cannot look fast. */
	invoke(): Promise<unknown>;
	/**
	 * Times `count` samples of `inner` invocations somewhere else (a contender in a process of its own, see
	 * isolated.ts), idle `gapMs` after each: the runner then calls this instead of `invoke`. `record` is false
	 * during the warm-up.
	 */
	timeBatch?(count: number, inner: number, gapMs: number, record: boolean): Promise<number[]>;
	/** Garbage collections in the contender's own process during the recorded rounds (isolated contenders). */
	gcs?(): GcCounts | undefined;
	/** Released after the comparison (pools, connections). */
	teardown?(): Promise<void> | void;
}

/** Garbage collections seen by a PerformanceObserver, and the invocations they were seen over. */
export interface GcCounts {
	/** Young-generation collections (scavenges). */
	minor: number;
	/** Full collections (mark-compact of the old generation). */
	major: number;
	invocations: number;
}

export interface ComparisonSpec {
	id: string;
	title: string;
	/** What the comparison shows, for the report. */
	description?: string;
	/** The contender every ratio is taken against. */
	reference: string;
	contenders: Contender[];
	/** Invocations per contender per round. */
	batch: number;
	/**
	 * Invocations timed together per sample, for microsecond handlers where one timer read per call would
	 * dominate. A sample is then the mean of `inner` consecutive invocations. Default 1.
	 */
	inner?: number;
	/**
	 * Idle time (ms, not timed) after each invocation. Lambda never delivers the next event the instant a response
	 * is posted: what an invocation leaves for after its response (a reset on its way, a clock-based check) happens
	 * in that gap, as on Lambda, instead of landing on the next invocation of a tight loop. Default 0.
	 */
	gapMs?: number;
	/** Unrecorded invocations per contender before the rounds (JIT, pools, TLS sessions). */
	warmup: number;
	minRounds: number;
	maxRounds: number;
	/** Time budget for the recorded rounds; the run stops after the round that exceeds it. */
	budgetMs: number;
}

export interface Stats {
	count: number;
	/** Milliseconds per invocation. */
	median: number;
	p99: number;
	mean: number;
	min: number;
}

export interface ContenderResult {
	name: string;
	note: string | undefined;
	stats: Stats;
	/** median / reference median */
	ratio: number;
	/** Spread of the same ratio computed round by round: 25th and 75th percentiles. */
	ratioIqr: [number, number];
	/** The median of each round, in round order: ratios between any two contenders, round by round. */
	roundMedians: number[];
	/** Per 10,000 invocations, in the contender's own process (isolated contenders only). */
	gcPer10k?: { minor: number; major: number };
}

export interface ComparisonResult {
	id: string;
	title: string;
	description: string | undefined;
	reference: string;
	rounds: number;
	/** Invocations per sample (see `inner`). */
	inner: number;
	elapsedMs: number;
	contenders: ContenderResult[];
}

/** Linear-interpolated percentile of sorted values (q in 0..1). */
export const percentile = (sorted: readonly number[], q: number): number => {
	if (sorted.length === 0) return Number.NaN;
	const position = (sorted.length - 1) * q;
	const low = Math.floor(position);
	const high = Math.ceil(position);
	const a = sorted[low] as number;
	const b = sorted[high] as number;
	return a + (b - a) * (position - low);
};

export const summarize = (samples: readonly number[]): Stats => {
	const sorted = [...samples].sort((a, b) => a - b);
	const sum = sorted.reduce((total, value) => total + value, 0);
	return {
		count: sorted.length,
		median: percentile(sorted, 0.5),
		p99: percentile(sorted, 0.99),
		mean: sum / sorted.length,
		min: sorted[0] ?? Number.NaN,
	};
};

/** 25th and 75th percentiles of a/b computed round by round (both measured in the same rounds). */
export const roundRatioIqr = (a: readonly number[], b: readonly number[]): [number, number] => {
	const ratios = a.map((value, i) => value / (b[i] ?? Number.NaN)).sort((x, y) => x - y);
	return [percentile(ratios, 0.25), percentile(ratios, 0.75)];
};

export const median = (values: readonly number[]): number =>
	percentile(
		[...values].sort((a, b) => a - b),
		0.5,
	);

const timeBatch = async (
	contender: Contender,
	batch: number,
	inner: number,
	gapMs: number,
	into: number[],
) => {
	if (contender.timeBatch) {
		into.push(...(await contender.timeBatch(batch, inner, gapMs, true)));
		return;
	}
	for (let i = 0; i < batch; i++) {
		const start = performance.now();
		for (let j = 0; j < inner; j++) await contender.invoke();
		into.push((performance.now() - start) / inner);
		if (gapMs > 0) await new Promise((resolve) => setTimeout(resolve, gapMs));
	}
};

export const runComparison = async (
	spec: ComparisonSpec,
	log: (line: string) => void,
): Promise<ComparisonResult> => {
	const inner = spec.inner ?? 1;
	const names = spec.contenders.map((contender) => contender.name);
	if (!names.includes(spec.reference)) throw new Error(`${spec.id}: no contender named ${spec.reference}`);
	const samples = new Map<string, number[]>(names.map((name) => [name, []]));
	/** Median per round per contender, for the round-to-round ratio spread. */
	const roundMedians = new Map<string, number[]>(names.map((name) => [name, []]));

	// Warm-up, interleaved too, in a few slices so that no contender is warmed long before the others.
	const slices = Math.min(spec.warmup, 5);
	for (let slice = 0; slice < slices; slice++) {
		for (const contender of spec.contenders) {
			const count = Math.ceil(spec.warmup / slices);
			if (contender.timeBatch) await contender.timeBatch(count, inner, spec.gapMs ?? 0, false);
			else for (let i = 0; i < count * inner; i++) await contender.invoke();
		}
	}

	const start = performance.now();
	let rounds = 0;
	while (rounds < spec.maxRounds && (rounds < spec.minRounds || performance.now() - start < spec.budgetMs)) {
		// Rotate the order each round: going first (or right after the slowest) is not a fixed advantage.
		const offset = rounds % spec.contenders.length;
		const order = [...spec.contenders.slice(offset), ...spec.contenders.slice(0, offset)];
		for (const contender of order) {
			const round: number[] = [];
			await timeBatch(contender, spec.batch, inner, spec.gapMs ?? 0, round);
			samples.get(contender.name)?.push(...round);
			roundMedians.get(contender.name)?.push(median(round));
		}
		rounds++;
	}
	const elapsedMs = performance.now() - start;

	const referenceStats = summarize(samples.get(spec.reference) ?? []);
	const referenceRounds = roundMedians.get(spec.reference) ?? [];
	const contenders = spec.contenders.map((contender): ContenderResult => {
		const stats = summarize(samples.get(contender.name) ?? []);
		const rounds = roundMedians.get(contender.name) ?? [];
		return {
			name: contender.name,
			note: contender.note,
			stats,
			ratio: stats.median / referenceStats.median,
			ratioIqr: roundRatioIqr(rounds, referenceRounds),
			roundMedians: rounds,
		};
	});
	for (const result of contenders) {
		log(
			`  ${result.name.padEnd(44)} median ${formatMs(result.stats.median).padStart(9)}  p99 ${formatMs(result.stats.p99).padStart(9)}  ×${result.ratio.toFixed(3)}`,
		);
	}
	return {
		id: spec.id,
		title: spec.title,
		description: spec.description,
		reference: spec.reference,
		rounds,
		inner,
		elapsedMs,
		contenders,
	};
};

/**
 * Adds each isolated contender's collection counts to the result, once its process has stopped (after
 * `teardownAll`): per 10,000 recorded invocations.
 */
export const attachGcCounts = (
	result: ComparisonResult,
	contenders: readonly Contender[],
): ComparisonResult => {
	for (const contender of result.contenders) {
		const gcs = contenders.find((candidate) => candidate.name === contender.name)?.gcs?.();
		if (gcs && gcs.invocations > 0) {
			contender.gcPer10k = {
				minor: (gcs.minor / gcs.invocations) * 10_000,
				major: (gcs.major / gcs.invocations) * 10_000,
			};
		}
	}
	return result;
};

/** A duration in the unit that reads best: ns, µs, ms or s. */
export const formatMs = (ms: number): string => {
	if (!Number.isFinite(ms)) return "–";
	if (ms < 0.001) return `${(ms * 1e6).toFixed(0)} ns`;
	if (ms < 1) return `${(ms * 1000).toFixed(ms < 0.01 ? 2 : 1)} µs`;
	if (ms < 1000) return `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
	return `${(ms / 1000).toFixed(2)} s`;
};

/** Tears every contender down, even when one teardown throws. */
export const teardownAll = async (contenders: readonly Contender[]): Promise<void> => {
	for (const contender of contenders) {
		try {
			await contender.teardown?.();
		} catch (error) {
			process.stderr.write(`[bench] teardown of ${contender.name} failed: ${String(error)}\n`);
		}
	}
};
