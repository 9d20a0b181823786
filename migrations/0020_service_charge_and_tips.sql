-- Issue 21: a venue's service charge (a share of the subtotal after discount, taxed at its
-- own rate when it has one, of this venue only) and its tips (on or off, and the presets
-- its diners are offered).

ALTER TABLE venue_settings
    ADD COLUMN service_charge_ppm integer NOT NULL DEFAULT 0
        CONSTRAINT venue_settings_service_charge_range CHECK (service_charge_ppm BETWEEN 0 AND 1000000),
    ADD COLUMN service_charge_tax_rate_id uuid,
    ADD COLUMN tips_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN tip_presets_ppm integer[] NOT NULL DEFAULT '{}'
        CONSTRAINT venue_settings_tip_presets_count CHECK (cardinality(tip_presets_ppm) <= 5),
    ADD CONSTRAINT venue_settings_service_charge_tax_rate_fkey FOREIGN KEY (venue_id, service_charge_tax_rate_id)
        REFERENCES tax_rates (venue_id, id);

GRANT UPDATE (service_charge_ppm, service_charge_tax_rate_id, tips_enabled, tip_presets_ppm)
    ON venue_settings TO venueql_app;
