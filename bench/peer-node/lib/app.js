'use strict';
// Loads the shared benchmark app (bench/app): object schemas and action sources.

const fs = require('node:fs');
const path = require('node:path');

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const FIELD_TYPES = new Set(['int', 'float', 'string', 'bool']);
const ROW_SECURITY = new Set(['none', 'owner']);
const RESERVED_COLUMNS = new Set(['id', 'owner', '__metadata']);
const OPERATIONS = ['read', 'create', 'update', 'delete'];

function loadSchema(dir) {
  const objects = new Map();
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    const raw = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
    const where = `${path.join(dir, file)}`;
    if (typeof raw.name !== 'string' || !NAME.test(raw.name)) {
      throw new Error(`${where}: "name" must match ${NAME}`);
    }
    if (raw.name === 'general') throw new Error(`${where}: "general" is reserved for actions`);
    if (objects.has(raw.name)) throw new Error(`${where}: object "${raw.name}" defined twice`);
    const fields = new Map();
    for (const [name, spec] of Object.entries(raw.fields || {})) {
      if (!NAME.test(name) || RESERVED_COLUMNS.has(name)) {
        throw new Error(`${where}: bad or reserved field name "${name}"`);
      }
      if (!spec || !FIELD_TYPES.has(spec.type)) {
        throw new Error(`${where}: field "${name}" has unsupported type ${JSON.stringify(spec && spec.type)}`);
      }
      fields.set(name, { name, type: spec.type, required: spec.required === true });
    }
    const permissions = {};
    for (const op of OPERATIONS) {
      const roles = (raw.permissions && raw.permissions[op]) || [];
      if (!Array.isArray(roles) || roles.some((r) => typeof r !== 'string')) {
        throw new Error(`${where}: permissions.${op} must be a list of role names`);
      }
      permissions[op] = new Set(roles);
    }
    const rowSecurity = raw.rowSecurity || 'none';
    if (!ROW_SECURITY.has(rowSecurity)) {
      throw new Error(`${where}: rowSecurity "${rowSecurity}" is not supported (only none, owner)`);
    }
    objects.set(raw.name, { name: raw.name, fields, permissions, rowSecurity });
  }
  return objects;
}

// actions/<object>/<trigger>/<name>.js → Map("<object>/<trigger>" → [{name, file, source}]),
// names sorted so several actions on one trigger run in a stable order.
function loadActions(dir) {
  const actions = new Map();
  if (!fs.existsSync(dir)) return actions;
  for (const object of fs.readdirSync(dir).sort()) {
    const objectDir = path.join(dir, object);
    if (!fs.statSync(objectDir).isDirectory()) continue;
    for (const trigger of fs.readdirSync(objectDir).sort()) {
      const triggerDir = path.join(objectDir, trigger);
      if (!fs.statSync(triggerDir).isDirectory()) continue;
      for (const file of fs.readdirSync(triggerDir).sort()) {
        if (!file.endsWith('.js')) continue;
        const name = file.slice(0, -3);
        const full = path.join(triggerDir, file);
        const key = `${object}/${trigger}`;
        if (!actions.has(key)) actions.set(key, []);
        actions.get(key).push({ id: `${object}/${trigger}/${name}`, name, file: full, source: fs.readFileSync(full, 'utf8') });
      }
    }
  }
  return actions;
}

function loadApp(appDir) {
  const objects = loadSchema(path.join(appDir, 'schema'));
  const actions = loadActions(path.join(appDir, 'actions'));
  for (const key of actions.keys()) {
    const [object, trigger] = key.split('/');
    if (object !== 'general' && !objects.has(object)) {
      throw new Error(`actions for unknown object "${object}" (${key})`);
    }
    if (!['afterCreate', 'onDemand'].includes(trigger)) {
      console.warn(`warning: actions under ${key} are loaded but this peer only runs afterCreate and onDemand`);
    }
  }
  return { objects, actions };
}

module.exports = { loadApp };
