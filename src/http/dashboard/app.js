// The dashboard shell: sign-in (an Admin's email and password, or the master token
// with an Admin's user token), the page menu, and switching pages. Each page is a
// module with `render(root, timers)`; its timers stop when another page opens.
import { api, clear, h, session, message, Timers, whenSignedOut } from './ui.js';
import * as data from './data.js';
import * as actions from './actions.js';
import * as live from './live.js';
import * as sockets from './sockets.js';
import * as health from './health.js';

const pages = { data, actions, live, sockets, health };
const $ = (id) => document.getElementById(id);
let timers = new Timers();

function showSignIn(note = '') {
  timers.close();
  session.clear();
  $('nav').hidden = true;
  $('signout').hidden = true;
  $('page').hidden = true;
  clear($('who'));
  $('signin').hidden = false;
  $('signin-error').textContent = note;
}

async function enter() {
  let profile;
  try {
    profile = await api('GET', '/api/account/profile');
  } catch (e) {
    showSignIn(message(e));
    return;
  }
  if (profile.role !== 'Admin') {
    showSignIn(`The dashboard is for Admins: ${profile.username} has the role ${profile.role}.`);
    return;
  }
  $('signin').hidden = true;
  $('nav').hidden = false;
  $('signout').hidden = false;
  $('page').hidden = false;
  clear($('who'), `${profile.username} · ${profile.appName || ''}`);
  route();
}

function route() {
  if (!session.authorization) return;
  const name = (location.hash || '#data').slice(1).split('/')[0];
  const page = Object.hasOwn(pages, name) ? pages[name] : data;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('on', a.dataset.page === name);
  }
  timers.close();
  timers = new Timers();
  const root = clear($('page'));
  root.dataset.page = name;
  Promise.resolve(page.render(root, timers)).catch((e) => {
    root.appendChild(h('p', { class: 'error' }, message(e)));
  });
}

async function signInWithPassword(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = new URLSearchParams({
    grant_type: 'password', username: form.get('username'), password: form.get('password'),
  });
  let response;
  try {
    response = await fetch('/token', { method: 'POST', body });
  } catch (e) {
    $('signin-error').textContent = `cannot reach the server: ${message(e)}`;
    return;
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    $('signin-error').textContent = answer.Message || `sign-in failed (HTTP ${response.status})`;
    return;
  }
  session.set(`Bearer ${answer.access_token}`);
  event.target.reset();
  enter();
}

function signInWithMaster(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  session.set(`Basic ${btoa(`${form.get('master')}:${form.get('userToken')}`)}`);
  event.target.reset();
  enter();
}

// Forgets the credentials in this tab only: `/1/user/signout` would end every session
// of this Admin, including their apps' and other operators' tabs.
function signOut() {
  showSignIn('Signed out.');
}

whenSignedOut(showSignIn);
$('signin-password').addEventListener('submit', signInWithPassword);
$('signin-master').addEventListener('submit', signInWithMaster);
$('signout').addEventListener('click', signOut);
window.addEventListener('hashchange', route);
if (session.authorization) enter(); else showSignIn();
