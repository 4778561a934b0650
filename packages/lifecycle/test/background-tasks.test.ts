import { performance } from "node:perf_hooks";
import { describe, expect, it } from "vitest";
import { BackgroundTasks } from "../src/background-tasks.ts";
import { safeLogger } from "../src/index.ts";

describe("BackgroundTasks.settled: the wait for context.waitUntil's tasks", () => {
	it("is true once every task has settled, tasks added by tasks included", async () => {
		const tasks = new BackgroundTasks(safeLogger(false));
		let ran = 0;
		tasks.waitUntil(async () => {
			ran++;
			tasks.waitUntil(async () => {
				ran++;
			});
		});
		expect(await tasks.settled(performance.now() + 60_000)).toBe(true);
		expect(ran).toBe(2);
	});

	it("ends at the deadline even while each task hands over to a next one (a drain loop that never empties)", async () => {
		const tasks = new BackgroundTasks(safeLogger(false));
		let started = 0;
		let stop = false;
		// Each task settles on the next turn of the event loop, having added the next one: the set of pending tasks
		// is never empty, and each of its generations settles well within a millisecond.
		const drain = (): Promise<void> =>
			new Promise((resolve) =>
				setImmediate(() => {
					if (!stop && started < 10_000) {
						started++;
						tasks.waitUntil(drain());
					}
					resolve();
				}),
			);
		tasks.waitUntil(drain());

		const settled = await tasks.settled(performance.now());
		const startedBeforeTheAnswer = started;
		stop = true;

		expect(settled).toBe(false);
		// The tasks that had just settled got their turn (one generation), and no more: the wait did not go on past
		// its deadline one generation at a time.
		expect(startedBeforeTheAnswer).toBeLessThanOrEqual(2);
	});
});
