// The kitchen display: a staff member signs in (PKCE, see session.js), sees the venue's
// open orders, watches them change live over graphql-transport-ws (the graphql-ws
// client), and moves each order along: PLACED → PREPARING → READY → SERVED.
import '../shared/style.css';
import { createClient } from 'graphql-ws';
import { allergen, el, graphql, loadConfig } from '../shared/graphql.js';
import { Session } from './session.js';

const ORDER_FIELDS = `id number status tableRef createdAt
  items { name quantity note }
  allergenAlerts { itemName allergens }`;
const QUEUE = `{ me { venue { name } person { email } } ordersQueue { ${ORDER_FIELDS} } }`;
const CHANGED = `subscription { ordersQueueChanged { ${ORDER_FIELDS} } }`;
const ADVANCE = `mutation($id: ID!, $status: OrderStatus!) { advanceOrder(id: $id, status: $status) { ${ORDER_FIELDS} } }`;
const NEXT = { PLACED: 'PREPARING', PREPARING: 'READY', READY: 'SERVED' };
const OPEN = new Set(Object.keys(NEXT));

const $ = (id) => document.getElementById(id);
const orders = new Map();
let session;
let config;

async function api(query, variables) {
  try {
    return await graphql(config.graphqlUrl, query, variables, await session.accessToken());
  } catch (error) {
    if (error.code !== 'UNAUTHENTICATED') throw error;
    await session.refresh(); // the access token was revoked or expired early: once more
    return graphql(config.graphqlUrl, query, variables, await session.accessToken());
  }
}

function render() {
  const open = [...orders.values()].filter((o) => OPEN.has(o.status)).sort((a, b) => a.number - b.number);
  $('queue').replaceChildren(...open.map(card));
  $('status').textContent = open.length ? '' : 'No open orders.';
}

function card(order) {
  const next = NEXT[order.status];
  // allergenAlerts is null when this person may not see diners' allergens.
  const alerts = order.allergenAlerts?.length
    ? el('p', { class: 'alert' }, '⚠ ', order.allergenAlerts.map((a) => `${a.itemName}: ${a.allergens.map(allergen).join(', ')}`).join('; '))
    : null;
  return el('li', { class: `card ${order.status.toLowerCase()}`, 'data-order': order.number },
    el('h2', {}, `#${order.number}`, order.tableRef ? ` · table ${order.tableRef}` : ''),
    el('span', { class: 'badge' }, order.status),
    el('ul', {}, order.items.map((i) => el('li', {}, `${i.quantity} × ${i.name}`, i.note ? el('em', {}, ` (${i.note})`) : null))),
    alerts,
    next ? el('button', { onclick: () => advance(order, next), 'data-advance': next }, `Mark ${next.toLowerCase()}`) : null);
}

async function advance(order, status) {
  try {
    const data = await api(ADVANCE, { id: order.id, status });
    orders.set(order.id, data.advanceOrder);
    render();
  } catch (error) {
    $('status').textContent = `Could not update #${order.number}: ${error.message}`;
  }
}

function subscribe() {
  const live = createClient({
    url: config.websocketUrl,
    // Asked on every (re)connection, so a refreshed token is used after a drop.
    connectionParams: async () => ({ Authorization: `Bearer ${await session.accessToken()}` }),
    keepAlive: 30_000,
    retryAttempts: Infinity,
    on: {
      connected: () => setLive(true),
      closed: () => setLive(false),
    },
  });
  live.subscribe({ query: CHANGED }, {
    next: ({ data, errors }) => {
      if (errors) $('status').textContent = errors.map((e) => e.message).join('; ');
      if (data) {
        orders.set(data.ordersQueueChanged.id, data.ordersQueueChanged);
        render();
      }
    },
    error: (error) => setLive(false, error),
    complete: () => setLive(false),
  });
}

function setLive(on) {
  $('live').textContent = on ? 'live' : 'offline';
  $('live').className = `badge ${on ? 'on' : 'off'}`;
}

async function showQueue() {
  const data = await api(QUEUE);
  $('venue').textContent = `${data.me.venue.name} · kitchen`;
  $('who').textContent = data.me.person?.email ?? '';
  for (const order of data.ordersQueue) orders.set(order.id, order);
  $('sign-out').hidden = false;
  render();
  subscribe();
}

async function main() {
  config = await loadConfig();
  session = await Session.start(config);
  $('sign-in').onclick = () => session.signIn();
  $('sign-out').onclick = async () => {
    await session.signOut();
    location.reload();
  };
  await session.completeSignIn();
  if (!session.signedIn) {
    $('status').textContent = 'Sign in with your venueql account to see the orders.';
    $('sign-in').hidden = false;
    return;
  }
  await showQueue();
}

main().catch((error) => {
  $('status').textContent = `Something went wrong: ${error.message}`;
  console.error(error);
});
