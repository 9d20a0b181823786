// A staff member's session in the browser: sign-in with the authorization code flow and
// PKCE through venueql's hosted login (oauth4webapi does the protocol), tokens kept in
// sessionStorage (this tab only), refreshed before they expire, revoked on sign-out.
import * as oauth from 'oauth4webapi';

const TOKENS = 'venueql.kitchen.tokens';
const PENDING = 'venueql.kitchen.pending';
const REFRESH_MARGIN_MS = 60_000;

export class Session {
  constructor(config, as) {
    this.config = config;
    this.as = as;
    this.client = { client_id: config.clientId };
    this.auth = oauth.None();
    // venueql dev serves on http://127.0.0.1; anywhere else the issuer is https.
    this.options = { [oauth.allowInsecureRequests]: new URL(config.issuer).protocol === 'http:' };
    this.tokens = JSON.parse(sessionStorage.getItem(TOKENS) ?? 'null');
    this.timer = undefined;
  }

  /** Fetches the server's metadata (RFC 8414) and restores this tab's session. */
  static async start(config) {
    const issuer = new URL(config.issuer);
    const options = { algorithm: 'oauth2', [oauth.allowInsecureRequests]: issuer.protocol === 'http:' };
    const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, options));
    const session = new Session(config, as);
    if (session.tokens) session.scheduleRefresh();
    return session;
  }

  get signedIn() {
    return this.tokens !== null;
  }

  /** Sends the browser to the hosted login with a fresh PKCE verifier and state. */
  async signIn() {
    const verifier = oauth.generateRandomCodeVerifier();
    const state = oauth.generateRandomState();
    sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
    const url = new URL(this.as.authorization_endpoint);
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('client_id', this.config.clientId);
    url.searchParams.set('redirect_uri', this.config.redirectUri);
    url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(verifier));
    url.searchParams.set('code_challenge_method', 'S256');
    url.searchParams.set('state', state);
    location.assign(url);
  }

  /** Finishes a sign-in when the hosted login sent the browser back here with a code. */
  async completeSignIn() {
    const here = new URL(location.href);
    if (!here.searchParams.has('code') && !here.searchParams.has('error')) return false;
    const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? 'null');
    sessionStorage.removeItem(PENDING);
    history.replaceState(null, '', this.config.redirectUri);
    if (!pending) throw new Error('This sign-in was not started in this tab; sign in again.');
    const params = oauth.validateAuthResponse(this.as, this.client, here, pending.state);
    const response = await oauth.authorizationCodeGrantRequest(
      this.as, this.client, this.auth, params, this.config.redirectUri, pending.verifier, this.options);
    this.store(await oauth.processAuthorizationCodeResponse(this.as, this.client, response));
    return true;
  }

  /** A valid access token, refreshed first when it is about to expire. */
  async accessToken() {
    if (!this.tokens) throw new Error('not signed in');
    if (Date.now() > this.tokens.expiresAt - REFRESH_MARGIN_MS) await this.refresh();
    return this.tokens.access;
  }

  /** Rotates the refresh token (venueql issues a new one on every use). */
  async refresh() {
    const response = await oauth.refreshTokenGrantRequest(
      this.as, this.client, this.auth, this.tokens.refresh, this.options);
    try {
      this.store(await oauth.processRefreshTokenResponse(this.as, this.client, response));
    } catch (error) {
      this.forget();
      throw error;
    }
  }

  /** Ends the session at the server (RFC 7009) and here. */
  async signOut() {
    if (this.tokens) {
      const response = await oauth.revocationRequest(this.as, this.client, this.auth, this.tokens.refresh, this.options);
      await oauth.processRevocationResponse(response).catch(() => {});
    }
    this.forget();
  }

  store(result) {
    this.tokens = {
      access: result.access_token,
      refresh: result.refresh_token,
      expiresAt: Date.now() + result.expires_in * 1000,
    };
    sessionStorage.setItem(TOKENS, JSON.stringify(this.tokens));
    this.scheduleRefresh();
  }

  forget() {
    this.tokens = null;
    sessionStorage.removeItem(TOKENS);
    clearTimeout(this.timer);
  }

  scheduleRefresh() {
    clearTimeout(this.timer);
    const wait = Math.max(this.tokens.expiresAt - REFRESH_MARGIN_MS - Date.now(), 1_000);
    this.timer = setTimeout(() => this.refresh().catch(() => location.reload()), wait);
  }
}
