// The drivers the tests run against (MIDDY_CONN_DRIVERS: the latest, or the floor the packages declare) are the
// ones worker threads started by tests load too: the resolve hook vitest gives its forks reaches them.
import { startWorkerThreadsEnvironment } from "@middy-conn/test-harness";
import * as mysqlCore from "mysql2";
import * as undici from "undici";
import { describe, expect, it } from "vitest";
import { driversSetting, loadedDriverVersion } from "./drivers.ts";

/** Reports the drivers a module loaded in a worker thread gets. */
const DRIVER_VERSIONS_FUNCTION = new URL("./fixtures/driver-versions-function.ts", import.meta.url);

describe(`drivers (MIDDY_CONN_DRIVERS=${driversSetting()})`, () => {
	it.each([
		["mysql2", loadedDriverVersion("mysql2", mysqlCore)],
		["undici", loadedDriverVersion("undici", undici)],
	] as const)("worker threads that tests start load the same %s (%s) as the tests", async (name, version) => {
		const environment = await startWorkerThreadsEnvironment({ module: DRIVER_VERSIONS_FUNCTION, workers: 1 });
		try {
			expect(await environment.workers[0]?.invoke()).toMatchObject({ [name]: version });
		} finally {
			await environment.terminate();
		}
	});
});
