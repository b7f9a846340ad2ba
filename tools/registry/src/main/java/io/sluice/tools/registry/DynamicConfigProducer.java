package io.sluice.tools.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.ArrayList;
import javax.enterprise.context.ApplicationScoped;
import javax.enterprise.inject.Produces;

/**
 * Apicurio's config-index Quarkus extension normally generates this bean at build time; its
 * deployment module is not on Maven Central, so the registry starts with no dynamic properties.
 */
@ApplicationScoped
public class DynamicConfigProducer {
    @Produces
    @ApplicationScoped
    public DynamicConfigPropertyList dynamicConfigPropertyList() {
        return new DynamicConfigPropertyList(new ArrayList<>());
    }
}
