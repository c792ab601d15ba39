// The console in a real browser: headless Chromium (Debian's `chromium`),
// driven by playwright-core, against a broker started by tests/api/console.rs,
// which passes in environment variables:
//
//   BROKER_URL    the broker, as `localhost`
//   PROVIDER_URL  the identity provider its console signs in at, as `127.0.0.1`
//                 (another site); Alice is a listed member there
//   ADMIN_TOKEN   its admin credential
//   T0, T1, T2    the ids of a chain's tokens: the orchestrator's for the
//                 planner, the planner's for the booker, the booker's for the airline
//   APPROVAL_ID   a booking waiting for a person
//   CHROMIUM      the browser
//   SCREENSHOTS   where each step's screenshot is kept
//
// Each step asserts on the page, and leaves a screenshot.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: these tests run from the Rust test (cargo nextest run --test api console::)`);
  return value;
}

const BROKER = required('BROKER_URL');
const PROVIDER = required('PROVIDER_URL');
const ADMIN = required('ADMIN_TOKEN');
const [T0, T1, T2] = ['T0', 'T1', 'T2'].map(required);
const APPROVAL = required('APPROVAL_ID');
const SHOTS = required('SCREENSHOTS');
mkdirSync(SHOTS, { recursive: true });

let browser;
let page;
// What the browser refused to load or run (a Content-Security-Policy
// violation), and scripts that failed. Status codes are the pages' own
// business: a wrong credential is answered 403 on purpose.
const problems = [];

before(async () => {
  browser = await chromium.launch({ executablePath: required('CHROMIUM'), args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  page.setDefaultTimeout(30_000);
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/.test(message.text())) problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(String(error)));
});

after(async () => {
  await browser?.close();
});

const shot = (name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
const state = (jti) => page.locator(`g[data-jti="${jti}"]`).getAttribute('data-status');

async function trace(jti) {
  await page.goto(`${BROKER}/console/trace`);
  await page.fill('#q', jti);
  await Promise.all([page.waitForURL(/\/console\/trace\?q=/), page.click('form.search button')]);
}

test('sign in at the identity provider as a listed member, and sign out', async () => {
  await page.goto(`${BROKER}/console`);
  await Promise.all([page.waitForURL((url) => url.href.startsWith(PROVIDER)), page.click('#provider')]);
  // The provider's own pages: a login form, then a consent form.
  await page.fill('input[name=login]', 'alice');
  await page.fill('input[name=password]', 'any');
  await page.click('button[type=submit]');
  await page.locator('button[type=submit]').waitFor();
  // Back from another site, the console opens with its Strict session cookie.
  await Promise.all([page.waitForURL(`${BROKER}/console/agents`), page.click('button[type=submit]')]);
  assert.equal(await page.locator('tr[data-agent="planner"]').count(), 1);
  const cookies = await page.context().cookies(`${BROKER}/console/callback`);
  assert.ok(cookies.some((cookie) => cookie.name === 'baton_console' && cookie.sameSite === 'Strict'), JSON.stringify(cookies));
  assert.ok(!cookies.some((cookie) => cookie.name === 'baton_console_sign_in'), JSON.stringify(cookies));
  await shot('0-provider-signed-in');
  await Promise.all([page.waitForURL(/\/console\/sign-in$/), page.click('form.sign-out button')]);
});

test('sign in with the admin credential, and see the inventory', async () => {
  await page.goto(`${BROKER}/console`);
  assert.match(page.url(), /\/console\/sign-in$/);
  await page.fill('#admin_token', 'not-the-token');
  await page.click('main button[type=submit]');
  await page.locator('.notice').waitFor();
  await page.fill('#admin_token', ADMIN);
  await Promise.all([page.waitForURL(/\/console\/agents$/), page.click('main button[type=submit]')]);
  for (const agent of ['orchestrator', 'planner', 'booker']) {
    assert.equal(await page.locator(`tr[data-agent="${agent}"]`).count(), 1, agent);
  }
  const cookies = await page.context().cookies();
  const session = cookies.find((cookie) => cookie.name === 'baton_console');
  assert.ok(session.httpOnly && session.sameSite === 'Strict', JSON.stringify(session));
  await shot('1-agents');
});

test('find the chain and see its tree', async () => {
  await trace(T1);
  assert.equal(await page.locator('#tree g.node').count(), 3);
  assert.deepEqual([await state(T0), await state(T1), await state(T2)], ['live', 'live', 'live']);
  assert.match(await page.locator('#details').innerText(), /planner/);
  await shot('2-tree');
});

test('approve the pending booking from the queue', async () => {
  await page.goto(`${BROKER}/console/approvals`);
  const row = page.locator(`tr[data-approval="${APPROVAL}"]`);
  assert.equal(await row.count(), 1);
  await shot('3-approvals');
  await Promise.all([page.waitForURL(/\/console\/approval\?id=/), row.locator('a.decide').click()]);
  await page.fill('#approver', 'travel-team@example.com');
  await Promise.all([page.waitForURL(/\/console\/approvals$/), page.click('button.approve')]);
  assert.equal(await page.locator(`tr[data-approval="${APPROVAL}"]`).count(), 0);
  await page.locator('#no-approvals').waitFor();
  // Approved, not denied nor expired: the admin API says so.
  const listed = await fetch(`${BROKER}/admin/approvals?state=approved`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const approved = (await listed.json()).approvals.map((approval) => approval.id);
  assert.deepEqual(approved, [APPROVAL]);
});

test('revoke T1: T1 and T2 turn revoked, T0 stays live', async () => {
  await trace(T1);
  await Promise.all([page.waitForURL(/\/console\/revoke\?/), page.click('a[href^="/console/revoke"]')]);
  assert.match(await page.locator('#blast-radius').innerText(), /kills 2 live tokens, held by booker, planner/);
  await shot('4-revoke-confirmation');
  await Promise.all([page.waitForURL(/\/console\/trace\?q=/), page.click('main button.danger')]);
  assert.deepEqual([await state(T0), await state(T1), await state(T2)], ['live', 'revoked', 'revoked']);
  await shot('5-revoked');
});

test('deprovision the orchestrator: T0 dies too', async () => {
  await trace(T0);
  await Promise.all([page.waitForURL(/\/console\/deprovision\?/), page.click('a[href^="/console/deprovision"]')]);
  assert.match(await page.locator('#blast-radius').innerText(), /1 live token, held by orchestrator/);
  await Promise.all([page.waitForURL(/\/console\/trace\?q=/), page.click('main button.danger')]);
  assert.equal(await state(T0), 'revoked');
  await shot('6-deprovisioned');
});

test('search the audit trail and ask the policy', async () => {
  await page.goto(`${BROKER}/console/audit`);
  await page.fill('#agent', 'planner');
  await page.fill('#decision', 'issued');
  await Promise.all([page.waitForURL(/\/console\/audit\?/), page.click('form.filters button')]);
  assert.equal(await page.locator(`table.audit a[href="/console/trace?q=${T1}"]`).count(), 1);
  await shot('7-audit');
  await page.goto(`${BROKER}/console/explain`);
  for (const [name, value] of [['action', 'exchange'], ['agent', 'booker'], ['target', 'https://api.airline.example'],
    ['scopes', 'flights.book'], ['subject', 'orchestrator'], ['parent_scopes', 'flights.book flights.read'],
    ['chain', 'planner'], ['depth', '2']]) {
    await page.fill(`#${name}`, value);
  }
  await Promise.all([page.waitForURL(/\/console\/explain\?/), page.click('form.filters button')]);
  assert.equal(await page.locator('#outcome').getAttribute('data-result'), 'granted');
  await shot('8-explain');
});

test('nothing on any page was refused by the browser', () => {
  assert.ok(page, 'the browser ran');
  assert.deepEqual(problems, []);
});
