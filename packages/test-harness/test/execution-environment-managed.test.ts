import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { type ManagedExecutionEnvironment, startManagedExecutionEnvironment } from "../src/index.ts";

const functions = fileURLToPath(new URL("./fixtures/lambda-functions.ts", import.meta.url));

const started: ManagedExecutionEnvironment[] = [];
const start = async (handler: string, options: { timeoutMs?: number; maxConcurrency?: number } = {}) => {
	const environment = await startManagedExecutionEnvironment({ module: functions, handler, ...options });
	started.push(environment);
	return environment;
};

afterEach(async () => {
	await Promise.all(started.splice(0).map((environment) => environment.kill()));
});

describe("managed execution environment (Lambda Managed Instances)", () => {
	it("runs several invocations at once in one process, sharing its module scope", async () => {
		const environment = await start("sleeping");
		const began = performance.now();
		const outcomes = await Promise.all(Array.from({ length: 4 }, () => environment.invoke({ ms: 300 })));
		expect(performance.now() - began).toBeLessThan(1000);
		expect(outcomes.every((outcome) => outcome.ok && outcome.result === "woke up")).toBe(true);
		expect(outcomes.filter((outcome) => outcome.cold)).toHaveLength(1);
		expect(environment.stats).toMatchObject({ invocations: 4, coldStarts: 1, peakConcurrency: 4 });
		const described = await start("describe");
		const views = await Promise.all(
			Array.from({ length: 3 }, (_, i) =>
				described.invoke<{ pid: number; awsRequestId: string }>({}, { requestId: `r-${i}` }),
			),
		);
		expect(new Set(views.map((view) => view.result?.pid)).size).toBe(1);
		expect(views.map((view) => view.result?.awsRequestId)).toEqual(["r-0", "r-1", "r-2"]);
	});

	it("queues invocations beyond maxConcurrency", async () => {
		const environment = await start("sleeping", { maxConcurrency: 2 });
		const began = performance.now();
		await Promise.all(Array.from({ length: 4 }, () => environment.invoke({ ms: 200 })));
		expect(performance.now() - began).toBeGreaterThanOrEqual(390);
		expect(environment.stats.peakConcurrency).toBe(2);
	});

	it("reports a timed-out invocation as failed and keeps the process running (LMI does not end it)", async () => {
		const environment = await start("sleeping");
		const pid = environment.pid;
		const [late, other] = await Promise.all([
			environment.invoke({ ms: 1500 }, { timeoutMs: 200 }),
			environment.invoke({ ms: 50 }),
		]);
		expect(late).toMatchObject({ ok: false, errorType: "Sandbox.Timedout" });
		expect(other).toMatchObject({ ok: true, result: "woke up" });
		expect(environment.pid).toBe(pid);
		expect((await environment.invoke({ ms: 0 })).cold).toBe(false);
	});

	it("fails every invocation in flight when the process crashes, and starts a new one for the next", async () => {
		const environment = await start("sleeping");
		const crashed = await start("unhandled");
		const outcome = await crashed.invoke({});
		expect(outcome).toMatchObject({ ok: false, errorType: "Runtime.UnhandledPromiseRejection" });
		expect(crashed.stats.crashes).toBe(1);
		expect((await crashed.invoke({})).cold).toBe(true);
		expect((await environment.invoke({ ms: 0 })).ok).toBe(true);
	});
});
