// Vitest global setup: one throwaway MySQL server for the whole test run (not one per file). Test files reach it
// through MIDDY_CONN_MYSQL_ADMIN_URL, which forked workers inherit, and each creates its own database and user.
import { startMysqlServer } from "./mysql-server.ts";

export default async function setup() {
	const server = await startMysqlServer();
	process.env.MIDDY_CONN_MYSQL_ADMIN_URL = server.adminUrl;
	process.stderr.write(
		`[test-harness] MySQL-compatible server ${server.version} on 127.0.0.1:${server.port}\n`,
	);
	return async () => {
		await server.stop();
	};
}
