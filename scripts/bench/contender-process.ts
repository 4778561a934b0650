// One contender in a process of its own (isolated.ts): builds its comparison's contenders as an in-process run
// would, keeps its own, and times batches of invocations when the runner asks. Counts the garbage collections
// this process runs while recording.
import { constants, PerformanceObserver, performance } from "node:perf_hooks";
import type { ContenderGroup, IsolatedJob, IsolatedReply, IsolatedRequest } from "./isolated.ts";
import type { GcCounts } from "./runner.ts";

const reply = (message: IsolatedReply, then: () => void = () => {}) => process.send?.(message, then);

const job = JSON.parse(process.env.MIDDY_CONN_BENCH_CONTENDER_JOB ?? "null") as IsolatedJob | null;
if (!job) throw new Error("MIDDY_CONN_BENCH_CONTENDER_JOB is not set");

const gcs: GcCounts = { minor: 0, major: 0, invocations: 0 };
let recording = false;
// GC entries are delivered after the fact, in batches: those of a recorded batch may arrive during the next one,
// which is recorded too (the warm-up comes first), so the totals hold.
new PerformanceObserver((list) => {
	if (!recording) return;
	for (const entry of list.getEntries()) {
		const kind = (entry as { detail?: { kind?: number } | null }).detail?.kind;
		if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gcs.minor++;
		else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcs.major++;
	}
}).observe({ entryTypes: ["gc"] });

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

try {
	const group = (await import(job.module)) as ContenderGroup;
	const all = await group.buildContenders(job.comparison, job.args);
	const mine = all[job.index];
	if (!mine) throw new Error(`${job.comparison} has no contender ${job.index}`);
	await Promise.all(all.filter((contender) => contender !== mine).map((contender) => contender.teardown?.()));
	process.on("message", async (message: IsolatedRequest) => {
		try {
			if (message.type === "exit") {
				await mine.teardown?.();
				// Let the last collections be reported before counting.
				await sleep(20);
				// Exits once the counts are sent: warm pools made by middlewares would keep it alive.
				reply({ type: "gcs", gcs }, () => process.exit(0));
				return;
			}
			recording = message.record;
			const samples: number[] = [];
			for (let i = 0; i < message.count; i++) {
				const start = performance.now();
				for (let j = 0; j < message.inner; j++) await mine.invoke();
				samples.push((performance.now() - start) / message.inner);
				if (message.gapMs > 0) await sleep(message.gapMs);
			}
			if (message.record) gcs.invocations += message.count * message.inner;
			reply({ type: "batch", samples });
		} catch (error) {
			reply({
				type: "failed",
				error: error instanceof Error ? (error.stack ?? error.message) : String(error),
			});
		}
	});
	reply({ type: "ready", name: mine.name, note: mine.note, count: all.length });
} catch (error) {
	reply(
		{ type: "failed", error: error instanceof Error ? (error.stack ?? error.message) : String(error) },
		() => process.exit(1),
	);
}
