// What the soak counts: every invocation's outcome, per fault, and every invariant that did not hold.
//
// Violations are of five kinds, and the last line of the report counts the first three:
// - leak: something outlived its invocation or escaped it: a DB connection above the scoped baseline or the pool's
//   limit, an HTTP socket above `connections`, a transaction, snapshot or session variable seen by a later
//   invocation, a rolled-back write made visible, memory or handles that keep growing, a secret in an error, a
//   response or a log line;
// - lost: a committed order, ledger entry, background task or SQS record that was neither delivered nor reported
//   failed;
// - duplicated: a POST the partner processed twice, an order written twice;
// - unexpected: a failure that did not reach the caller as a clear error, or an outcome the fault cannot explain
//   (an invocation that should have been unaffected failed, a crash, a Lambda timeout);
// - running: a statement of a timed-out invocation still running on the server a second after the invocation
//   returned (Middy's timeout must stop it: it holds its transaction's locks until it ends).
//
// Two outcomes are neither violations nor silent: they are what the middlewares document, so the soak counts and
// reports them (`Ledger.note`) without failing the run, and each is recognised narrowly (anything else that looks
// like it is still a violation):
// - a batch half-committed by a custom timeoutEarlyResponse that answered while the handler awaited something
//   neither middleware tracks (a timer): packages/mysql/README.md, "Closing, on every path";
// - a streamed body whose response stream broke after the body's source had been read to its end: the COMMIT
//   happens at the end of the body, so the export is committed while the client did not get its last bytes, as a
//   standard-mode answer lost on the network after the COMMIT.
import type { InvocationOutcome } from "@middy-conn/test-harness";
import type { FaultKind, FunctionName } from "./directive.ts";

export type ViolationKind = "leak" | "lost" | "duplicated" | "unexpected" | "running";

/** A row of the report: a fault, ordinary traffic, or the probes. (db-restart and db-restart-live are rows of
 * invocations a restart overlapped.) */
export type Row = FaultKind | "none" | "probe";

export type InvocationResult = "succeeded" | "answered 4xx" | "clear error" | "unclear";

export interface RowCounts {
	invocations: number;
	succeeded: number;
	answered4xx: number;
	clearError: number;
	unclear: number;
	/** Background tasks and SQS records of these invocations delivered exactly once. */
	delivered: number;
	/** Background tasks and SQS records reported failed (to the logger, or as batch item failures). */
	reportedFailed: number;
	leak: number;
	lost: number;
	duplicated: number;
	unexpected: number;
	/** Statements of timed-out invocations still running on the server after the grace. */
	running: number;
}

export interface Violation {
	kind: ViolationKind;
	row: Row;
	fn: FunctionName | "soak";
	message: string;
}

/** Documented outcomes that the soak counts and reports, and does not hold against the middlewares. */
export const NOTED = {
	"timeout-answer-half-commit":
		"half-committed by a timeoutEarlyResponse while the handler awaited an untracked promise (known gap, see packages/mysql/README.md)",
	"answer-lost-after-commit":
		"answer lost after commit: a streamed body's response stream broke after its source had been read to the end (committed at the end of the body)",
} as const;
export type NotedKind = keyof typeof NOTED;

export interface Noted {
	kind: NotedKind;
	row: Row;
	fn: FunctionName;
	message: string;
}

const emptyRow = (): RowCounts => ({
	invocations: 0,
	succeeded: 0,
	answered4xx: 0,
	clearError: 0,
	unclear: 0,
	delivered: 0,
	reportedFailed: 0,
	leak: 0,
	lost: 0,
	duplicated: 0,
	unexpected: 0,
	running: 0,
});

/** At most this many violations are printed as they happen; all are counted. */
const PRINTED_VIOLATIONS = 40;

export class Ledger {
	readonly rows = new Map<Row, RowCounts>();
	readonly violations: Violation[] = [];
	/** Documented outcomes: counted and reported, not violations. */
	readonly noted: Noted[] = [];
	/** Faults injected: invocations that carried one, plus DB restarts. */
	faults = 0;
	invocations = 0;
	readonly #say: (line: string) => void;

	constructor(say: (line: string) => void) {
		this.#say = say;
	}

	row(row: Row): RowCounts {
		let counts = this.rows.get(row);
		if (!counts) {
			counts = emptyRow();
			this.rows.set(row, counts);
		}
		return counts;
	}

	invocation(row: Row, result: InvocationResult) {
		this.invocations++;
		const counts = this.row(row);
		counts.invocations++;
		if (result === "succeeded") counts.succeeded++;
		else if (result === "answered 4xx") counts.answered4xx++;
		else if (result === "clear error") counts.clearError++;
		else counts.unclear++;
	}

	task(row: Row, outcome: "delivered" | "reported failed") {
		if (outcome === "delivered") this.row(row).delivered++;
		else this.row(row).reportedFailed++;
	}

	violation(kind: ViolationKind, row: Row, fn: FunctionName | "soak", message: string) {
		this.violations.push({ kind, row, fn, message });
		this.row(row)[kind]++;
		if (this.violations.length <= PRINTED_VIOLATIONS) this.#say(`  ✗ ${kind}: ${fn}: ${message}`);
		else if (this.violations.length === PRINTED_VIOLATIONS + 1)
			this.#say("  ✗ (further violations only counted)");
	}

	count(kind: ViolationKind): number {
		return this.violations.filter((violation) => violation.kind === kind).length;
	}

	/** A documented outcome (NOTED): counted and reported; the first of each kind is printed as it happens. */
	note(kind: NotedKind, row: Row, fn: FunctionName, message: string) {
		if (!this.noted.some((noted) => noted.kind === kind))
			this.#say(`  · noted (${NOTED[kind]}): ${fn}: ${message}`);
		this.noted.push({ kind, row, fn, message });
	}

	countNoted(kind: NotedKind): number {
		return this.noted.filter((noted) => noted.kind === kind).length;
	}
}

// --- Clear errors --------------------------------------------------------------------------------------------

/** Error names that say what went wrong: Middy's timeout, the examples' own, the middlewares', the soak's. */
const CLEAR_ERROR_NAMES = new Set([
	"TimeoutError",
	"InvalidEvent",
	"AccountNotFound",
	"MiddyConnError",
	"SoakFault",
]);
/** Messages that come from a bug, not from a decision to fail. */
const UNCLEAR_MESSAGE =
	/Cannot read propert|Cannot destructure|is not a function|is not defined|is not iterable|\[object Object\]|^undefined$/;
const STACK_TRACE = /\n\s+at\s|\bat\s+\S+\s+\(.*:\d+:\d+\)/;

/** A function error (not an HTTP response) is clear when it is named, says something, and is not a bug's. */
export const isClearError = (outcome: InvocationOutcome): boolean =>
	outcome.errorType === "Handler" && isClearErrorValue(outcome.error);

/** An error (as it crossed the process boundary) that is named or has a code, and says something. */
export const isClearErrorValue = (
	error: { name: string; message: string; code?: string | undefined } | undefined,
): boolean => {
	if (!error) return false;
	const named = CLEAR_ERROR_NAMES.has(error.name) || typeof error.code === "string";
	return named && error.message.length >= 10 && !UNCLEAR_MESSAGE.test(error.message);
};

export interface HttpAnswer {
	statusCode: number;
	body: string;
}

/** The example's deliberate answer to a server-side failure: the detail goes to the log, never to the client. */
export const INTERNAL_ERROR_BODY = JSON.stringify({ message: "internal error" });

/** An HTTP API response: 2xx, a 4xx that says what is wrong, or the deliberate 500; never a stack trace. */
export const classifyHttpAnswer = (answer: HttpAnswer | undefined): InvocationResult => {
	if (!answer || typeof answer.statusCode !== "number") return "unclear";
	const body = typeof answer.body === "string" ? answer.body : "";
	if (STACK_TRACE.test(body)) return "unclear";
	if (answer.statusCode < 400) return "succeeded";
	if (answer.statusCode >= 500) return body === INTERNAL_ERROR_BODY ? "clear error" : "unclear";
	let message: unknown = body;
	try {
		message = (JSON.parse(body) as { message?: unknown }).message;
	} catch {
		// a 4xx whose body is plain text: the message is the body itself
	}
	return typeof message === "string" && message.length >= 10 && !UNCLEAR_MESSAGE.test(message)
		? "answered 4xx"
		: "unclear";
};

// --- Secrets ---------------------------------------------------------------------------------------------------

/** Finds any of the run's secrets (and their URL-encoded forms) in a text. */
export class SecretScanner {
	readonly #forms: Array<{ label: string; form: string }> = [];
	scanned = 0;

	add(label: string, secret: string) {
		for (const form of new Set([secret, encodeURIComponent(secret)])) this.#forms.push({ label, form });
	}

	/** The labels of the secrets found in `text`. */
	find(text: string): string[] {
		this.scanned++;
		const found = new Set<string>();
		for (const { label, form } of this.#forms) if (text.includes(form)) found.add(label);
		return [...found];
	}
}

// --- Memory and handles --------------------------------------------------------------------------------------

export interface Sample {
	rss: number;
	handles: number;
}

/** Per process (a function's environment may be replaced after a crash): the samples, in order. */
export class MemorySeries {
	readonly samples = new Map<string, Sample[]>();
	readonly heaps = new Map<string, number[]>();

	sample(fn: FunctionName, pid: number | undefined, sample: Sample) {
		const key = `${fn} ${pid}`;
		const list = this.samples.get(key) ?? [];
		list.push(sample);
		this.samples.set(key, list);
	}

	heap(fn: FunctionName, pid: number | undefined, heapUsed: number) {
		const key = `${fn} ${pid}`;
		const list = this.heaps.get(key) ?? [];
		list.push(heapUsed);
		this.heaps.set(key, list);
	}
}

const median = (values: number[]): number => {
	if (values.length === 0) return Number.NaN;
	const sorted = [...values].sort((a, b) => a - b);
	return sorted[Math.floor(sorted.length / 2)] as number;
};

export interface Trend {
	process: string;
	samples: number;
	/** RSS medians of the second, third and last quarter of the process's invocations (MB). */
	rssMb: [number, number, number];
	/** Most active handles in the second and in the last quarter. */
	handles: [number, number];
	/** Heap in use after a full GC, at each memory probe (MB). */
	heapsMb: number[];
	growing: string[];
}

/** Below this many samples a process says nothing about a trend. */
const MIN_SAMPLES = 40;
/**
 * RSS growth from the third quarter to the last that counts as a leak. RSS first climbs to a plateau (V8 sizes
 * its young generation to the allocation rate: a new connection per invocation allocates a lot), so the first
 * quarters are not compared.
 */
const RSS_GROWTH_MB = 48;
/** Handles above the second quarter's most that count as a leak (a socket or timer per invocation would show). */
const HANDLES_SLACK = 6;
/** Heap growth after a full GC, from the second memory probe (warm) to the last, that counts as a leak. */
const HEAP_GROWTH_MB = 8;

const mb = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10;

/** Compares each process's quarters (the first is its warm-up) and its heap after GC from probe to probe. */
export const trends = (series: MemorySeries): Trend[] => {
	const out: Trend[] = [];
	for (const [process, samples] of series.samples) {
		if (samples.length < MIN_SAMPLES) continue;
		const quarter = Math.floor(samples.length / 4);
		const second = samples.slice(quarter, 2 * quarter);
		const third = samples.slice(2 * quarter, 3 * quarter);
		const last = samples.slice(3 * quarter);
		const heapsMb = (series.heaps.get(process) ?? []).map(mb);
		const rss = (window: Sample[]) => mb(median(window.map((sample) => sample.rss)));
		const handles = (window: Sample[]) => Math.max(...window.map((sample) => sample.handles));
		const trend: Trend = {
			process,
			samples: samples.length,
			rssMb: [rss(second), rss(third), rss(last)],
			handles: [handles(second), handles(last)],
			heapsMb,
			growing: [],
		};
		if (trend.rssMb[2] - trend.rssMb[1] > RSS_GROWTH_MB) trend.growing.push("RSS");
		if (trend.handles[1] > trend.handles[0] + HANDLES_SLACK) trend.growing.push("active handles");
		const warm = heapsMb[1];
		const final = heapsMb[heapsMb.length - 1];
		if (heapsMb.length >= 3 && warm !== undefined && final !== undefined && final - warm > HEAP_GROWTH_MB) {
			trend.growing.push("heap after GC");
		}
		out.push(trend);
	}
	return out;
};
