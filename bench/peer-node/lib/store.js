'use strict';
// SQLite through better-sqlite3: WAL with synchronous=NORMAL (livebase's SQLite settings),
// one table per object, prepared statements only.

const fs = require('node:fs');
const Database = require('better-sqlite3');

const SQL_TYPES = { int: 'INTEGER', float: 'REAL', string: 'TEXT', bool: 'INTEGER' };

function quote(ident) {
  return `"${ident.replace(/"/g, '""')}"`;
}

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
    const scope = object.rowSecurity === 'owner' ? ' WHERE owner = ?' : '';
    listers.set(object.name, {
      page: db.prepare(`SELECT * FROM ${quote(object.name)}${scope} ORDER BY id LIMIT ?`),
      count: db.prepare(`SELECT COUNT(*) AS n FROM ${quote(object.name)}${scope}`),
      owned: object.rowSecurity === 'owner',
    });
  }

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
    // {id, owner} so the caller can build the row as REST shows it.
    insert(objectName, values, ownerId) {
      const { stmt, names, owned } = inserters.get(objectName);
      const params = owned ? [ownerId] : [];
      for (const n of names) {
        const v = values[n];
        params.push(v === undefined ? null : typeof v === 'boolean' ? (v ? 1 : 0) : v);
      }
      return Number(stmt.run(params).lastInsertRowid);
    },
    // One page of rows in id order and the total, scoped to the owner under owner
    // security (as livebase's list does).
    list(objectName, pageSize, ownerId) {
      const { page, count, owned } = listers.get(objectName);
      const scope = owned ? [ownerId] : [];
      return { totalRows: count.get(...scope).n, data: page.all(...scope, pageSize) };
    },
    close() {
      db.close();
    },
  };
}

module.exports = { openStore };
