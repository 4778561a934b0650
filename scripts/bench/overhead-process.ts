// One overhead contender in a process of its own (overhead.ts): builds its handler, then times batches of
// invocations when the runner asks, and counts the garbage collections this process runs while recording.
import { constants, PerformanceObserver, performance } from "node:perf_hooks";
import {
	buildOverheadInvoke,
	type OverheadJob,
	type OverheadReply,
	type OverheadRequest,
} from "./overhead.ts";
import type { GcCounts } from "./runner.ts";

const reply = (message: OverheadReply) => process.send?.(message);

const job = JSON.parse(process.env.MIDDY_CONN_BENCH_OVERHEAD_JOB ?? "null") as OverheadJob | null;
if (!job) throw new Error("MIDDY_CONN_BENCH_OVERHEAD_JOB is not set");

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

try {
	const invoke = await buildOverheadInvoke(job);
	process.on("message", async (message: OverheadRequest) => {
		try {
			if (message.type === "exit") {
				// Let the last collections be reported before counting.
				await new Promise((resolve) => setTimeout(resolve, 20));
				// Exits once the counts are sent: the middlewares' warm pools would keep it alive.
				process.send?.({ type: "gcs", gcs } satisfies OverheadReply, () => process.exit(0));
				return;
			}
			recording = message.record;
			const samples: number[] = [];
			for (let i = 0; i < message.count; i++) {
				const start = performance.now();
				for (let j = 0; j < message.inner; j++) await invoke();
				samples.push((performance.now() - start) / message.inner);
			}
			if (message.record) gcs.invocations += message.count * message.inner;
			reply({ type: "batch", samples });
		} catch (error) {
			reply({ type: "failed", error: String(error) });
		}
	});
	reply({ type: "ready" });
} catch (error) {
	reply({ type: "failed", error: String(error) });
}
