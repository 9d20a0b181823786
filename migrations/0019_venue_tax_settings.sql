-- Issue 21: how a venue charges tax. `tax_mode`: prices include tax (inclusive, EU style)
-- or tax is added at checkout (exclusive, US style); `default_tax_rate_id`: the rate of
-- items that name none (a rate of the same venue: the composite key refuses another
-- venue's, and a rate in use as the default cannot be deleted); `tax_id`: the venue's VAT
-- or tax number, for receipts.

ALTER TABLE venue_settings
    ADD COLUMN tax_mode text NOT NULL DEFAULT 'inclusive'
        CONSTRAINT venue_settings_tax_mode CHECK (tax_mode IN ('inclusive', 'exclusive')),
    ADD COLUMN default_tax_rate_id uuid,
    ADD COLUMN tax_id text CONSTRAINT venue_settings_tax_id_length CHECK (tax_id IS NULL OR length(tax_id) BETWEEN 1 AND 50),
    ADD CONSTRAINT venue_settings_default_tax_rate_fkey FOREIGN KEY (venue_id, default_tax_rate_id)
        REFERENCES tax_rates (venue_id, id);

-- (INSERT is granted on the whole table since 0004.)
GRANT UPDATE (tax_mode, default_tax_rate_id, tax_id) ON venue_settings TO venueql_app;
