-- The HTML template a tag's public archive page is rendered into (campaigns.archive.geturl's
-- TemplateURL); empty means the built-in page. The service checks it is an absolute http(s) URL.
ALTER TABLE tags
    ADD COLUMN archive_template_url text NOT NULL DEFAULT ''
        CONSTRAINT tags_archive_template_url_check CHECK (char_length(archive_template_url) <= 2000);
