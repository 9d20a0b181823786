// GraphQL over HTTP (POST, JSON): the one request helper both apps share.

/** An error the server answered, with its `extensions.code` (e.g. UNAUTHENTICATED). */
export class GraphQLRequestError extends Error {
  constructor(errors, status) {
    super(errors.map((e) => e.message).join('; '));
    this.code = errors[0]?.extensions?.code ?? `HTTP_${status}`;
    this.retryAfter = errors[0]?.extensions?.retryAfter;
  }
}

/** Runs one operation and returns its `data`, or throws the server's first error. */
export async function graphql(url, query, variables = {}, token = undefined) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  const body = await response.json().catch(() => ({ errors: [{ message: `HTTP ${response.status}` }] }));
  if (body.errors?.length) throw new GraphQLRequestError(body.errors, response.status);
  return body.data;
}

/** Minor units to a price for people: 1250, "EUR" → "€12.50". */
export function money(minor, currency) {
  return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(minor / 100);
}

/** Allergen enum names for people: CEREALS_CONTAINING_GLUTEN → "cereals containing gluten". */
export function allergen(name) {
  return name.toLowerCase().replaceAll('_', ' ');
}

/** The app's settings, served beside it as config.json. */
export async function loadConfig() {
  const response = await fetch('./config.json');
  if (!response.ok) throw new Error('config.json is missing: serve this app with its settings (venueql dev does)');
  return response.json();
}

/** A DOM element with attributes and children, to keep the views short. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (value !== false && value !== undefined) node.setAttribute(name, value === true ? '' : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}
