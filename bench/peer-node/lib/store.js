'use strict';
// SQLite through better-sqlite3: WAL with synchronous=NORMAL (livebase's SQLite settings),
// one table per object, prepared statements only.

const fs = require('node:fs');
const Database = require('better-sqlite3');

const SQL_TYPES = { int: 'INTEGER', float: 'REAL', string: 'TEXT', bool: 'INTEGER' };

function quote(ident) {
  return `"${ident.replace(/"/g, '""')}"`;
}

const sqlValue = (v) => (typeof v === 'boolean' ? (v ? 1 : 0) : v);

// Filter operators, as livebase's: `notEquals` also matches NULL; `equals`/`notEquals`
// null mean IS (NOT) NULL.
const CONDITIONS = {
  equals: (f, isNull) => (isNull ? `${f} IS NULL` : `${f} = ?`),
  notEquals: (f, isNull) => (isNull ? `${f} IS NOT NULL` : `(${f} <> ? OR ${f} IS NULL)`),
  greaterThan: (f) => `${f} > ?`,
  greaterThanOrEqualsTo: (f) => `${f} >= ?`,
  lessThan: (f) => `${f} < ?`,
  lessThanOrEqualsTo: (f) => `${f} <= ?`,
};

function openStore(file, objects) {
  // A fresh database each run.
  for (const suffix of ['', '-wal', '-shm']) fs.rmSync(file + suffix, { force: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = ON');

  db.exec(`CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    password TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    role TEXT NOT NULL
  )`);
  const insertUser = db.prepare(
    'INSERT INTO users (email, password, first_name, last_name, role) VALUES (?, ?, ?, ?, ?)');
  const userByEmail = db.prepare('SELECT id, email, password, role FROM users WHERE email = ?');

  const inserters = new Map();
  const listers = new Map();
  for (const object of objects.values()) {
    const columns = ['id INTEGER PRIMARY KEY AUTOINCREMENT'];
    if (object.rowSecurity === 'owner') columns.push('owner INTEGER NOT NULL REFERENCES users(id)');
    for (const f of object.fields.values()) {
      columns.push(`${quote(f.name)} ${SQL_TYPES[f.type]}${f.required ? ' NOT NULL' : ''}`);
    }
    db.exec(`CREATE TABLE ${quote(object.name)} (${columns.join(', ')})`);
    if (object.rowSecurity === 'owner') {
      db.exec(`CREATE INDEX ${quote(`${object.name}_owner`)} ON ${quote(object.name)} (owner)`);
    }
    const names = [...object.fields.keys()];
    const insertColumns = (object.rowSecurity === 'owner' ? ['owner'] : []).concat(names);
    const stmt = db.prepare(`INSERT INTO ${quote(object.name)} (${insertColumns.map(quote).join(', ')})
      VALUES (${insertColumns.map(() => '?').join(', ')})`);
    inserters.set(object.name, { stmt, names, owned: object.rowSecurity === 'owner' });
    listers.set(object.name, {
      byId: db.prepare(`SELECT * FROM ${quote(object.name)} WHERE id = ?`),
      // Page and count statements per shape of WHERE clause, prepared on first use.
      shapes: new Map(),
      owned: object.rowSecurity === 'owner',
    });
  }
  // A list's statements for one WHERE shape: the owner restriction (when `scoped`) and
  // each condition's field and operator; values are always bound.
  function shape(objectName, conditions, scoped) {
    const lister = listers.get(objectName);
    const where = scoped ? ['owner = ?'] : [];
    for (const c of conditions) where.push(CONDITIONS[c.op](quote(c.field), c.value === null));
    const clause = where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '';
    let statements = lister.shapes.get(clause);
    if (!statements) {
      statements = {
        page: db.prepare(`SELECT * FROM ${quote(objectName)}${clause} ORDER BY id LIMIT ? OFFSET ?`),
        count: db.prepare(`SELECT COUNT(*) AS n FROM ${quote(objectName)}${clause}`),
      };
      lister.shapes.set(clause, statements);
    }
    return statements;
  }

  function insert(objectName, values, ownerId) {
    const { stmt, names, owned } = inserters.get(objectName);
    const params = owned ? [ownerId] : [];
    for (const n of names) {
      const v = values[n];
      params.push(v === undefined ? null : sqlValue(v));
    }
    return Number(stmt.run(params).lastInsertRowid);
  }
  const insertAll = db.transaction((rows, ownerId) => rows.map(({ object, values }) => insert(object, values, ownerId)));

  return {
    db,
    createUser(email, passwordHash, firstName, lastName, role) {
      const info = insertUser.run(email, passwordHash, firstName, lastName, role);
      return Number(info.lastInsertRowid);
    },
    userByEmail(email) {
      return userByEmail.get(email);
    },
    // Inserts a validated row (autocommit: committed when run() returns) and answers
    // its id, so the caller can build the row as REST shows it.
    insert,
    // Inserts many validated rows in one transaction (all or none); answers their ids.
    insertMany(rows, ownerId) {
      return insertAll(rows, ownerId);
    },
    // One row by id, or undefined.
    get(objectName, id) {
      return listers.get(objectName).byId.get(id);
    },
    // One page of rows in id order and the total, scoped to `ownerId` (null: every
    // row) and to the conditions ({field, op, value}, checked by the caller), as
    // livebase's list does. better-sqlite3 is synchronous, so nothing is written between
    // the two statements.
    list(objectName, { pageSize, pageNumber = 1, conditions = [] }, ownerId) {
      const scoped = ownerId !== null && listers.get(objectName).owned;
      const { page, count } = shape(objectName, conditions, scoped);
      const params = scoped ? [ownerId] : [];
      for (const c of conditions) if (c.value !== null) params.push(sqlValue(c.value));
      return {
        totalRows: count.get(...params).n,
        data: page.all(...params, pageSize, pageSize * (pageNumber - 1)),
      };
    },
    close() {
      db.close();
    },
  };
}

module.exports = { openStore, CONDITIONS };
