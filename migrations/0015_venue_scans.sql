-- Cross-venue scans of the app role (issue 13): jobs that visit every venue (payment
-- reconciliation, retention) list the venues only through this function, which records
-- who scanned and why in platform_audit_events, as the cross-tenant door does for the
-- platform role. Each venue is then visited in its own venue transaction.

CREATE FUNCTION private.open_venue_scan(p_actor text, p_reason text) RETURNS SETOF uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO public.platform_audit_events (actor, reason) VALUES (p_actor, 'venue scan: ' || p_reason);
    RETURN QUERY SELECT v.id FROM public.venues v ORDER BY v.id;
END $$;

REVOKE ALL ON FUNCTION private.open_venue_scan(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.open_venue_scan(text, text) TO venueql_app;
