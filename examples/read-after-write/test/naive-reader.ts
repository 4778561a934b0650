// The seed's bug, kept as a control: the reader's own logic (readAccount) on a connection created once per
// execution environment at module scope, as many Lambda functions do to "reuse the connection".
import mysql from "mysql2/promise";
import { type ReadEvent, readAccount } from "../handler.ts";

const connection = mysql.createConnection({
	host: process.env.DB_HOST,
	port: Number(process.env.DB_PORT ?? 3306),
	user: process.env.DB_USER,
	password: process.env.DB_PASSWORD,
	database: process.env.DB_NAME,
});

export const naiveReader = async (event: ReadEvent) => readAccount(await connection, event);

/** The test's cleanup (on Lambda, nothing ever closes it). */
export const closeNaiveReader = async () => (await connection).end();
