// Memory: RSS and heap after 100 warm invocations and after 10,000, in child processes started with
// --expose-gc (memory-process.ts), so that nothing else the benchmark did is on the heap. The children only count
// bytes, not time, so they run side by side.
import { fileURLToPath } from "node:url";
import { spawnTracked } from "../cleanup.ts";
import type { MemoryJob, MemoryReading } from "./memory-process.ts";
import type { DbPeer, HttpPeer } from "./peers.ts";
import { type Mode, memoryPlan } from "./settings.ts";

const script = fileURLToPath(new URL("./memory-process.ts", import.meta.url));

export const VARIANTS: Record<MemoryJob["variant"], string> = {
	"middlewares-pool": "middy + httpPool + mysqlConnection (pool mode)",
	"bare-pool": "middy + bare undici Pool + mysql2 pool",
	"middlewares-scoped": "middy + httpPool + mysqlConnection (scoped mode)",
	"bare-scoped": "middy + bare undici Pool + mysql2 createConnection/end",
};

/** The same work without the middlewares: what the runtime and the drivers grow by themselves. */
export const BASELINE: Partial<Record<MemoryJob["variant"], MemoryJob["variant"]>> = {
	"middlewares-pool": "bare-pool",
	"middlewares-scoped": "bare-scoped",
};

export interface MemoryVariantResult {
	variant: MemoryJob["variant"];
	name: string;
	readings: MemoryReading[];
	early: MemoryReading;
	last: MemoryReading;
	/** Bytes per invocation between the early and the last reading. */
	heapPerInvocation: number;
	rssPerInvocation: number;
	/** Heap bytes per invocation once warm: least-squares slope over the readings from `warm` on. */
	heapSlopeWarm: number;
}

export interface MemoryResult {
	early: number;
	/** Invocations after which the process counts as warm (JIT and pools settled): the slope starts there. */
	warm: number;
	total: number;
	variants: MemoryVariantResult[];
	/** Variants that could not run, with the reason. */
	skipped: string[];
}

const run = (job: MemoryJob): Promise<MemoryReading[]> =>
	new Promise((resolve, reject) => {
		const child = spawnTracked(process.execPath, ["--expose-gc", "--no-flush-bytecode", script], {
			stdio: ["ignore", "inherit", "pipe", "ipc"],
			// Bounded: 10,000 invocations take seconds; a child that hangs is killed and reported.
			timeoutMs: 180_000,
			env: { ...process.env, NODE_OPTIONS: "", MIDDY_CONN_BENCH_MEMORY_JOB: JSON.stringify(job) },
		});
		const readings: MemoryReading[] = [];
		let stderr = "";
		child.stderr?.on("data", (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.on("message", (message: { type: string; reading?: MemoryReading }) => {
			if (message.type === "reading" && message.reading) readings.push(message.reading);
		});
		child.once("error", reject);
		child.once("exit", (code, signal) => {
			if (code === 0) resolve(readings);
			else
				reject(
					new Error(
						`memory run ${job.variant} failed (${code ?? signal}): ${stderr.trim().split("\n").slice(-5).join(" | ")}`,
					),
				);
		});
	});

const perInvocation = (a: MemoryReading, b: MemoryReading, key: "heapUsed" | "rss") =>
	(b[key] - a[key]) / (b.invocations - a.invocations);

/** Least-squares slope of heapUsed over invocations: steadier than two readings, each of which carries noise. */
const slope = (readings: readonly MemoryReading[]): number => {
	const n = readings.length;
	if (n < 2) return Number.NaN;
	const meanX = readings.reduce((sum, r) => sum + r.invocations, 0) / n;
	const meanY = readings.reduce((sum, r) => sum + r.heapUsed, 0) / n;
	let numerator = 0;
	let denominator = 0;
	for (const r of readings) {
		numerator += (r.invocations - meanX) * (r.heapUsed - meanY);
		denominator += (r.invocations - meanX) ** 2;
	}
	return numerator / denominator;
};

export const runMemoryGroup = async (
	mode: Mode,
	peers: { http: HttpPeer; db: DbPeer },
	middlewaresAvailable: boolean,
): Promise<MemoryResult> => {
	const plan = memoryPlan(mode);
	const variants: MemoryJob["variant"][] = middlewaresAvailable
		? ["middlewares-pool", "bare-pool", "middlewares-scoped", "bare-scoped"]
		: ["bare-pool", "bare-scoped"];
	const skipped = middlewaresAvailable ? [] : ["the middlewares are not available: only the baseline ran"];
	mode.log(`Memory: ${plan.total} invocations per variant, readings at ${plan.checkpoints.join(", ")}`);
	const settled = await Promise.allSettled(
		variants.map((variant) =>
			run({
				variant,
				origin: peers.http.origin,
				ca: peers.http.ca,
				db: peers.db.config,
				checkpoints: plan.checkpoints,
			}),
		),
	);
	const results: MemoryVariantResult[] = [];
	settled.forEach((outcome, index) => {
		const variant = variants[index] as MemoryJob["variant"];
		if (outcome.status === "rejected") {
			skipped.push(String(outcome.reason));
			mode.log(`  ${VARIANTS[variant]}: ${String(outcome.reason)}`);
			return;
		}
		const readings = outcome.value;
		const early = readings.find((reading) => reading.invocations === plan.early);
		const last = readings.at(-1);
		const warm = readings.filter((reading) => reading.invocations >= plan.warm);
		if (!early || !last || warm.length < 2) {
			skipped.push(`${VARIANTS[variant]}: incomplete readings`);
			return;
		}
		const result: MemoryVariantResult = {
			variant,
			name: VARIANTS[variant],
			readings,
			early,
			last,
			heapPerInvocation: perInvocation(early, last, "heapUsed"),
			rssPerInvocation: perInvocation(early, last, "rss"),
			heapSlopeWarm: slope(warm),
		};
		results.push(result);
		mode.log(
			`  ${result.name.padEnd(52)} heap ${(early.heapUsed / 2 ** 20).toFixed(1)} → ${(last.heapUsed / 2 ** 20).toFixed(1)} MiB, ${result.heapPerInvocation.toFixed(1)} B/inv (warm slope ${result.heapSlopeWarm.toFixed(1)}); rss ${(early.rss / 2 ** 20).toFixed(1)} → ${(last.rss / 2 ** 20).toFixed(1)} MiB`,
		);
	});
	return { early: plan.early, warm: plan.warm, total: plan.total, variants: results, skipped };
};
