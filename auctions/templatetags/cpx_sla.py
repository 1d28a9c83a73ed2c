"""The SLA contract on the pages: `{% job_sla job as sla %}` gives the job's terms and its leases'
measurements, for templates/includes/_sla.html."""

from django import template

from auctions.selectors.sla import job_sla_summary

register = template.Library()


@register.simple_tag
def job_sla(job) -> dict:
    return job_sla_summary(job=job)
