-- Issue 21: the tax rates a venue sells at (VAT 20%, sales tax 8.875%), in parts per
-- million so that every rate in use is exact (8.875% = 88750).

CREATE TABLE tax_rates (
    venue_id   uuid NOT NULL REFERENCES venues (id),
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    name       text NOT NULL CONSTRAINT tax_rates_name_length CHECK (length(name) BETWEEN 1 AND 80),
    rate_ppm   integer NOT NULL CONSTRAINT tax_rates_rate_range CHECK (rate_ppm BETWEEN 0 AND 1000000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, id),
    CONSTRAINT tax_rates_name_key UNIQUE (venue_id, name)
);
COMMENT ON TABLE tax_rates IS 'Tenant: the tax rates a venue sells at, parts per million.';

ALTER TABLE tax_rates ENABLE ROW LEVEL SECURITY;
ALTER TABLE tax_rates FORCE ROW LEVEL SECURITY;
CREATE POLICY venue_isolation ON tax_rates AS PERMISSIVE FOR ALL TO venueql_app, venueql_platform
    USING (venue_id = (SELECT public.current_venue_id()))
    WITH CHECK (venue_id = (SELECT public.current_venue_id()));

GRANT SELECT, INSERT, DELETE, UPDATE (name, rate_ppm, updated_at) ON tax_rates TO venueql_app;
