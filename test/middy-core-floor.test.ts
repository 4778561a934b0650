// The @middy/core the tests run against follows MIDDY_CONN_DRIVERS as the drivers do: under "floor", the lowest
// version the packages accept (their peer range's floor, installed as @middy/core-floor), in test files, in the
// packages' sources and in the worker threads tests start; otherwise the latest.
import { readFileSync } from "node:fs";
import middy from "@middy/core";
import middyFloor from "@middy/core-floor";
import { startWorkerThreadsEnvironment } from "@middy-conn/test-harness";
import { describe, expect, it } from "vitest";
import { driversSetting, middyCoreFloor } from "./drivers.ts";

const floor = driversSetting() === "floor";
const MIDDY_CORE_FUNCTION = new URL("./fixtures/middy-core-function.ts", import.meta.url);

describe(`@middy/core (MIDDY_CONN_DRIVERS=${driversSetting()})`, () => {
	it("@middy/core-floor is the lowest version the packages' peer range accepts", () => {
		const installed = JSON.parse(
			readFileSync(new URL("../node_modules/@middy/core-floor/package.json", import.meta.url), "utf8"),
		) as { version: string };
		expect(installed.version).toBe(middyCoreFloor());
	});

	it(`tests and the packages' sources import ${floor ? "the floor" : "the latest"} @middy/core`, () => {
		expect(middy === middyFloor).toBe(floor);
	});

	it(`worker threads that tests start import ${floor ? "the floor" : "the latest"} @middy/core too`, async () => {
		const environment = await startWorkerThreadsEnvironment({ module: MIDDY_CORE_FUNCTION, workers: 1 });
		try {
			expect(await environment.workers[0]?.invoke()).toEqual({ floor });
		} finally {
			await environment.terminate();
		}
	});
});
