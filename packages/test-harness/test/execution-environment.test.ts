import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { type ExecutionEnvironment, startExecutionEnvironment } from "../src/index.ts";

const functions = fileURLToPath(new URL("./fixtures/lambda-functions.ts", import.meta.url));

const started: ExecutionEnvironment[] = [];
const start = async (handler: string, options: { timeoutMs?: number; env?: Record<string, string> } = {}) => {
	const environment = await startExecutionEnvironment({ module: functions, handler, ...options });
	started.push(environment);
	return environment;
};

const eventually = async (check: () => boolean, timeoutMs = 3000) => {
	const deadline = Date.now() + timeoutMs;
	while (!check() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
	return check();
};

afterEach(async () => {
	await Promise.all(started.splice(0).map((environment) => environment.kill()));
});

describe("execution environment", () => {
	it("imports the function on the first invocation (cold) and reuses the process for the next (warm)", async () => {
		const environment = await start("describe");
		const outcomes = [];
		for (let i = 0; i < 3; i++) outcomes.push(await environment.invoke({ echo: i }));
		expect(outcomes.map((outcome) => outcome.cold)).toEqual([true, false, false]);
		expect(
			outcomes.map(
				(outcome) =>
					(outcome.result as { invocationsInThisEnvironment: number }).invocationsInThisEnvironment,
			),
		).toEqual([1, 2, 3]);
		expect(new Set(outcomes.map((outcome) => (outcome.result as { pid: number }).pid)).size).toBe(1);
		expect(outcomes[0]?.initMs).toBeGreaterThan(0);
		expect(environment.stats).toMatchObject({ invocations: 3, coldStarts: 1, crashes: 0 });
	});

	it("passes a Lambda-like context: request id, function name, a deadline, and the function's environment", async () => {
		const environment = await start("describe", { timeoutMs: 5000, env: { GREETING: "hello" } });
		const outcome = await environment.invoke<Record<string, unknown>>({ echo: "x" }, { requestId: "req-1" });
		expect(outcome.ok).toBe(true);
		expect(outcome.result).toMatchObject({
			awsRequestId: "req-1",
			functionName: "lambda-functions",
			functionNameFromEnv: "lambda-functions",
			greeting: "hello",
			echo: "x",
		});
		const remaining = outcome.result?.remainingMs as number;
		expect(remaining).toBeGreaterThan(0);
		expect(remaining).toBeLessThanOrEqual(5000);
	});

	it("ends the invocation when the handler's promise settles, and runs nothing while frozen", async () => {
		const environment = await start("forgetful");
		const outcome = await environment.invoke({ laterMs: 50 });
		expect(outcome.result).toBe("returned");
		// Frozen right after returning, as Lambda does: the timer the handler left behind cannot fire.
		expect(environment.frozen).toBe(true);
		await new Promise((resolve) => setTimeout(resolve, 300));
		expect(environment.logs()).not.toContain("late work ran");
		// Thawed, it fires late, in what would be someone else's invocation on Lambda.
		environment.thaw();
		expect(await eventually(() => environment.logs().includes("late work ran"))).toBe(true);
	});

	it("returns the handler's error as the invocation's error, and keeps the environment warm", async () => {
		const environment = await start("failing");
		const first = await environment.invoke({});
		expect(first).toMatchObject({
			ok: false,
			errorType: "Handler",
			error: { message: "order 42 not found", statusCode: 404 },
		});
		const second = await environment.invoke({});
		expect(second.cold).toBe(false);
		expect(environment.stats.crashes).toBe(0);
	});

	it("ends the environment at the deadline; the next invocation is a cold start in a new process", async () => {
		const environment = await start("sleeping", { timeoutMs: 200 });
		const firstPid = environment.pid;
		const timedOut = await environment.invoke({ ms: 5000 });
		expect(timedOut).toMatchObject({ ok: false, errorType: "Sandbox.Timedout" });
		const next = await environment.invoke({ ms: 1 });
		expect(next).toMatchObject({ ok: true, result: "woke up", cold: true });
		expect(environment.pid).not.toBe(firstPid);
		expect(environment.stats).toMatchObject({ timeouts: 1, coldStarts: 2 });
	});

	it("ends the environment on an unhandled rejection, as the Node runtime does", async () => {
		const environment = await start("unhandled");
		const outcome = await environment.invoke({});
		expect(outcome).toMatchObject({
			ok: false,
			errorType: "Runtime.UnhandledPromiseRejection",
			error: { message: "nobody caught me" },
		});
		expect(environment.stats.crashes).toBe(1);
		expect((await environment.invoke({})).cold).toBe(true);
	});

	it("freezes and thaws on demand, and kill ends the process even while frozen", async () => {
		const environment = await start("describe");
		await environment.invoke({});
		environment.thaw();
		expect(environment.frozen).toBe(false);
		await environment.freeze();
		expect(environment.frozen).toBe(true);
		const pid = environment.pid as number;
		await environment.kill();
		expect(() => process.kill(pid, 0)).toThrow();
		await expect(environment.invoke({})).rejects.toThrow(/killed/);
	});
});
