// A diner's ordering page for one venue: the menu with its allergens, a basket,
// startCheckout (the server prices it and creates the PaymentIntent), the payment, then
// waiting for the order: an order exists only once Stripe's webhook confirmed the
// payment, so the page asks `checkout(id, clientSecret)` until it has a number.
//
// Payment: with Stripe, the Payment Element (Stripe.js) takes the card with the
// checkout's client secret; in `venueql dev` a local stand-in of Stripe is paid with one
// button (`/dev/pay` beside this page, which plays the card payment and the webhook).
import '../shared/style.css';
import { allergen, el, graphql, loadConfig, money } from '../shared/graphql.js';

const MENU = `{ venue { name currency } menu { categories { name items {
  id name description priceMinor currency allergens available } } } }`;
const START = `mutation($input: StartCheckoutInput!) {
  startCheckout(input: $input) { checkoutId clientSecret amountMinor currency } }`;
const STATE = `query($id: ID!, $secret: String!) { checkout(id: $id, clientSecret: $secret) { status orderNumber } }`;
const POLL_MS = 1000;
// The 14 allergens of EU Regulation 1169/2011, Annex II (the API's `Allergen` enum).
const ALLERGENS = ['CELERY', 'CEREALS_CONTAINING_GLUTEN', 'CRUSTACEANS', 'EGGS', 'FISH', 'LUPIN', 'MILK',
  'MOLLUSCS', 'MUSTARD', 'TREE_NUTS', 'PEANUTS', 'SESAME', 'SOYBEANS', 'SULPHITES'];

const $ = (id) => document.getElementById(id);
const basket = new Map(); // item id → { item, quantity }
let config;
let venue;

function renderMenu(categories) {
  $('menu').replaceChildren(...categories.map((category) =>
    el('div', {}, el('h2', {}, category.name), category.items.map((item) =>
      el('div', { class: 'item' },
        el('div', {}, el('strong', {}, item.name), el('small', {}, item.description),
          el('small', {}, item.allergens.length ? `Contains: ${item.allergens.map(allergen).join(', ')}` : 'No declared allergens')),
        el('div', {}, money(item.priceMinor, item.currency), ' ',
          el('button', { 'data-add': item.name, onclick: () => add(item), disabled: !item.available },
            item.available ? 'Add' : 'Sold out')))))));
}

function add(item) {
  const line = basket.get(item.id) ?? { item, quantity: 0 };
  line.quantity = Math.min(line.quantity + 1, 99);
  basket.set(item.id, line);
  renderBasket();
}

function renderBasket() {
  const lines = [...basket.values()];
  $('basket').replaceChildren(...lines.map((l) => el('li', {}, `${l.quantity} × ${l.item.name}`)));
  const total = lines.reduce((sum, l) => sum + l.quantity * l.item.priceMinor, 0);
  $('total').textContent = lines.length ? `${money(total, venue.currency)} (the server's price is final)` : '–';
  $('checkout').disabled = lines.length === 0;
}

function renderAllergenChoices() {
  $('allergens').append(...ALLERGENS.map((name) =>
    el('label', {}, el('input', { type: 'checkbox', value: name, 'data-allergen': name }), ` ${allergen(name)} `)));
}

/** What the diner told the kitchen, if anything. It reaches this order's kitchen alert;
 *  sharing it with other venues would need the emailed code (requestDinerCode). */
function diner() {
  const email = $('email').value.trim();
  const allergens = [...document.querySelectorAll('#allergens input:checked')].map((box) => box.value);
  return email && allergens.length ? { email, allergens } : undefined;
}

async function checkout() {
  $('checkout').disabled = true;
  $('status').textContent = 'Starting the payment…';
  const items = [...basket.values()].map((l) => ({ menuItemId: l.item.id, quantity: l.quantity }));
  const tableRef = $('table').value.trim() || undefined;
  try {
    const input = { items, tableRef, diner: diner() };
    const { startCheckout } = await graphql(config.graphqlUrl, START, { input });
    $('status').textContent = `To pay: ${money(startCheckout.amountMinor, startCheckout.currency)}`;
    await (config.payment.mode === 'stripe' ? payWithStripe : payWithLocalStandIn)(startCheckout);
  } catch (error) {
    $('status').textContent = `Could not check out: ${error.message}`;
    $('checkout').disabled = false;
  }
}

/** Production: Stripe's Payment Element, confirmed in place. */
async function payWithStripe(started) {
  await loadScript('https://js.stripe.com/v3/');
  const stripe = window.Stripe(config.payment.publishableKey);
  const elements = stripe.elements({ clientSecret: started.clientSecret });
  elements.create('payment').mount('#payment-element');
  $('payment').hidden = false;
  $('pay').onclick = async () => {
    $('pay').disabled = true;
    const { error } = await stripe.confirmPayment({ elements, redirect: 'if_required' });
    if (error) {
      $('status').textContent = error.message;
      $('pay').disabled = false;
      return;
    }
    await waitForOrder(started);
  };
}

/** `venueql dev`: the local stand-in of Stripe takes the payment and sends the webhook. */
async function payWithLocalStandIn(started) {
  $('payment').hidden = false;
  $('pay').textContent = 'Pay with the local stand-in';
  $('pay').onclick = async () => {
    $('pay').disabled = true;
    const response = await fetch(config.payment.payUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ clientSecret: started.clientSecret }),
    });
    if (!response.ok) {
      $('status').textContent = `The payment failed: ${await response.text()}`;
      $('pay').disabled = false;
      return;
    }
    await waitForOrder(started);
  };
}

async function waitForOrder(started) {
  $('status').textContent = 'Paid. Waiting for the kitchen to get your order…';
  for (;;) {
    const { checkout } = await graphql(config.graphqlUrl, STATE, { id: started.checkoutId, secret: started.clientSecret });
    if (checkout.orderNumber) {
      $('payment').hidden = true;
      $('status').replaceChildren(el('strong', { id: 'order-number' }, `Order #${checkout.orderNumber}`), ' is with the kitchen.');
      basket.clear();
      renderBasket();
      return;
    }
    if (['FAILED', 'CANCELED', 'EXPIRED'].includes(checkout.status)) {
      $('status').textContent = `The payment did not go through (${checkout.status.toLowerCase()}).`;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    document.head.append(el('script', { src, onload: resolve, onerror: () => reject(new Error(`could not load ${src}`)) }));
  });
}

async function main() {
  config = await loadConfig();
  const data = await graphql(config.graphqlUrl, MENU);
  venue = data.venue;
  $('venue').textContent = venue.name;
  document.title = `Order · ${venue.name}`;
  renderMenu(data.menu.categories);
  renderAllergenChoices();
  renderBasket();
  $('checkout').onclick = checkout;
}

main().catch((error) => {
  $('status').textContent = `Something went wrong: ${error.message}`;
  console.error(error);
});
